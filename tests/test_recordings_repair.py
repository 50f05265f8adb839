"""Recordings a crash left unfinished: what a SIGKILLed recorder leaves behind, and repair."""

import logging
import os
import signal
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from callbridge.recordings.naming import recording_path
from callbridge.recordings.repair import (
    WavHeaderError,
    read_layout,
    repair_recordings,
    repair_wav,
)

RATE = 8000


def wav_bytes(
    frames: np.ndarray,
    *,
    riff: int | None = None,
    data: int | None = None,
    before_fmt: bytes = b"",
    trailing: bytes = b"",
) -> bytes:
    """A 16-bit stereo WAV holding ``frames``, with the header sizes given (default: true)."""
    audio = frames.astype("<i2").tobytes() + trailing
    fmt = struct.pack("<HHIIHH", 1, 2, RATE, RATE * 4, 4, 16)
    body = b"WAVE" + before_fmt + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(audio) if data is None else data)
    riff_size = len(body) + len(audio) if riff is None else riff
    return b"RIFF" + struct.pack("<I", riff_size) + body + audio


def frames(n: int) -> np.ndarray:
    return np.arange(2 * n, dtype=np.int16).reshape(n, 2)


def a_recording(directory: Path) -> Path:
    return recording_path(directory, uuid.uuid4())


def sizes(path: Path) -> tuple[int, int]:
    layout = read_layout(path.read_bytes()[:4096])
    return layout.riff_size, layout.data_size


@pytest.mark.parametrize(
    ("riff", "data"),
    [(8, 0), (0, 0), (0xFFFFFFFF, 0xFFFFFFFF), (36 + 400, 400)],
    ids=["libsndfile-provisional", "zeros", "streaming-placeholder", "one-batch-behind"],
)
def test_a_wrong_header_is_fixed_and_the_audio_kept(tmp_path: Path, riff: int, data: int) -> None:
    path = a_recording(tmp_path)
    # Killed in the middle of a write: half a frame trails the last whole one.
    path.write_bytes(wav_bytes(frames(1000), riff=riff, data=data, trailing=b"\x01\x02"))

    assert repair_recordings(tmp_path) == [path]
    assert path.stat().st_size == 44 + 4000
    assert sizes(path) == (36 + 4000, 4000)
    audio, rate = sf.read(path, dtype="int16")
    assert rate == RATE
    np.testing.assert_array_equal(audio, frames(1000))
    assert repair_recordings(tmp_path) == []  # now consistent


def test_a_header_without_audio_becomes_an_empty_wav(tmp_path: Path) -> None:
    path = a_recording(tmp_path)
    path.write_bytes(wav_bytes(frames(0), riff=8, data=0))
    assert repair_wav(path)
    assert sizes(path) == (36, 0)
    assert sf.info(path).frames == 0


def test_finished_files_are_left_alone(tmp_path: Path) -> None:
    plain = a_recording(tmp_path)
    plain.write_bytes(wav_bytes(frames(10)))
    # Chunks before fmt (odd-sized, so padded) and after data, as other writers make them.
    listed = a_recording(tmp_path)
    tail = b"LIST" + struct.pack("<I", 4) + b"INFO"
    odd = b"junk" + struct.pack("<I", 3) + b"abc\x00"
    content = wav_bytes(frames(10), before_fmt=odd)
    content = content[:4] + struct.pack("<I", len(content) - 8 + len(tail)) + content[8:] + tail
    listed.write_bytes(content)

    assert repair_recordings(tmp_path) == []
    assert listed.read_bytes() == content
    assert sf.info(listed).frames == 10


def test_only_recording_names_are_touched(tmp_path: Path) -> None:
    broken = wav_bytes(frames(10), riff=8, data=0)
    other = tmp_path / "voicemail.wav"
    other.write_bytes(broken)
    target = a_recording(tmp_path / "elsewhere")
    target.parent.mkdir()
    target.write_bytes(broken)
    link = tmp_path / target.name
    link.symlink_to(target)

    assert repair_recordings(tmp_path) == []
    assert other.read_bytes() == broken
    assert target.read_bytes() == broken


def test_unreadable_heads_are_logged_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = a_recording(tmp_path)
    empty.write_bytes(b"")  # killed before libsndfile wrote its header
    garbage = a_recording(tmp_path)
    garbage.write_bytes(b"ID3\x04" + bytes(100))
    good = a_recording(tmp_path)
    good.write_bytes(wav_bytes(frames(5), data=0))

    with caplog.at_level(logging.WARNING, logger="callbridge.recordings.repair"):
        assert repair_recordings(tmp_path) == [good]
    assert empty.read_bytes() == b""
    messages = sorted(r.getMessage() for r in caplog.records)
    assert messages == sorted(
        f"cannot repair recording {p}: not a RIFF/WAVE file" for p in (empty, garbage)
    )


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"RIFX\x00\x00\x00\x00WAVE", "not a RIFF/WAVE"),
        (b"RIFF\x00\x00\x00\x00WAVEdata\x00\x00\x00\x00", "no usable fmt"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt \x02\x00\x00\x00\x01\x00", "fmt chunk too short"),
        (b"RIFF\x00\x00\x00\x00WAVELIST\x00\x10\x00\x00", "no data chunk"),
    ],
)
def test_header_errors(head: bytes, message: str) -> None:
    with pytest.raises(WavHeaderError, match=message):
        read_layout(head)


# The writer killed below: a Recorder fed 3 s of a 440 Hz agent and a 1 kHz customer on a
# fake clock, flushed at 1 s and 2 s (each flush writes up to 200 ms before "now"). It says
# "ready" when it is where the test wants it killed and then blocks. Modes:
#   idle       killed between flushes, with nothing being written;
#   mid-write  killed inside the second flush, after its audio went out and before the
#              header was brought up to date;
#   stale      the header is never updated: what libsndfile alone leaves behind.
WRITER = """
import struct, sys, threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from callbridge.media.g711 import alaw_encode, ulaw_encode
from callbridge.recordings import recorder as module

path, mode = sys.argv[1], sys.argv[2]

def ready():
    print("ready", flush=True)
    threading.Event().wait()

real_patch, patches = module.patch_sizes, []

def patch(fd, offset, size):
    patches.append(size)
    if mode == "mid-write" and len(patches) == 2:
        ready()
    if mode != "stale":
        real_patch(fd, offset, size)

module.patch_sizes = patch
t = np.arange(3 * 8000) / 8000
agent = ulaw_encode((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
customer = alaw_encode((8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16))

def rtp(pt, k, ssrc, codes):  # a plain 12-byte RTP header, as the relay hands it over
    return struct.pack("!BBHII", 0x80, pt, k, 1000 + 160 * k, ssrc) + codes[160 * k:160 * k + 160]

clock = [0.0]
rec = module.Recorder(path, start=0.0, writers=module.ThreadWriters(ThreadPoolExecutor(1)),
                      now=lambda: clock[0], left_legs={"agent"})
for k in range(150):
    arrival = k * 0.02 + 0.005
    if arrival >= 1.0 and clock[0] < 1.0 or arrival >= 2.0 and clock[0] < 2.0:
        clock[0] = float(int(arrival))
        rec.flush().result()
    rec.on_audio("agent", rtp(0, k, 1, agent), "PCMU", arrival)
    rec.on_audio("customer", rtp(8, k, 2, customer), "PCMA", arrival + 0.003)
ready()
"""


def kill_writer(path: Path, mode: str) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), mode],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # blocks until the child is where we want it
        assert line == b"ready\n", child.communicate()[1].decode()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout and child.stdout.close()
        child.stderr and child.stderr.close()


@pytest.mark.parametrize(
    ("mode", "header_frames"),
    [("idle", 14400), ("mid-write", 6400), ("stale", 0)],
)
def test_a_sigkilled_recorder_leaves_audio_that_repair_recovers(
    tmp_path: Path, mode: str, header_frames: int
) -> None:
    path = a_recording(tmp_path)
    kill_writer(path, mode)

    # On disk: all audio written up to the last flush (1.8 s), behind a header that may be
    # behind it (libsndfile's own header claims no audio at all).
    size = path.stat().st_size
    layout = read_layout(path.read_bytes()[:4096])
    assert size - layout.data_offset == 14400 * 4
    assert layout.data_size == header_frames * 4
    assert layout.matches(size) == (mode == "idle")

    assert repair_recordings(tmp_path) == ([] if mode == "idle" else [path])
    audio, rate = sf.read(path, dtype="int16")
    assert (rate, audio.shape) == (RATE, (14400, 2))
    for channel, freq in ((0, 440), (1, 1000)):
        spectrum = np.abs(np.fft.rfft(audio[:, channel] * np.hanning(len(audio))))
        assert np.argmax(spectrum) * RATE / len(audio) == pytest.approx(freq, abs=3)
