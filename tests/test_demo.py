"""The first five minutes: `callbridge demo` on a fresh folder, and the README's two commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]


def test_demo_places_a_call_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "callbridge", "demo", "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "curl -s http://127.0.0.1:" in out  # the request it made, ready to paste
    progress = ["agent ringing", "customer ringing", "bridged", "ended: ANSWER"]
    positions = [out.index(step) for step in progress]
    assert positions == sorted(positions)  # shown as it happened, in order
    assert "(signature verified)" in out
    assert '"call_status": "ANSWER"' in out and '"status": "ANSWER"' in out
    match = re.search(r"Recording \(agent left, customer right\): (\S+\.wav)", out)
    assert match, out
    audio, rate = soundfile.read(match.group(1), dtype="int16")
    assert rate == 8000 and audio.shape[1] == 2 and len(audio) > 2 * rate
    for channel in (0, 1):  # both parties talked: real audio on both channels
        samples = audio[rate // 2: -rate // 2, channel].astype(float)
        assert np.sqrt(np.mean(samples ** 2)) > 500
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
        assert spectrum.max() > 50 * np.median(spectrum)  # a tone, not noise


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert block and readme.index(block.group(0)) < readme.index("\n## ")
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert len(commands) == 2
    assert commands[0].endswith("callbridge demo")
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
