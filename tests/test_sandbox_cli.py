"""`callbridge sandbox` on its own, and a normal `callbridge serve` using it as its trunk."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from callback_server import CallbackServer
from e2e_support import CALLER_ID, seed
from sipp import free_udp_port


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    """``python -m callbridge ARGS`` and its first line of output."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    proc = subprocess.Popen([sys.executable, "-m", "callbridge", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env={**environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    return proc, proc.stdout.readline()


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    finally:
        assert proc.stdout is not None
        proc.stdout.close()


def test_serve_uses_a_standalone_sandbox_as_its_trunk(tmp_path: Path) -> None:
    sip_port = free_udp_port()
    sandbox, line = start("sandbox", "--port", str(sip_port), "--ring", "0.2",
                          "--hangup-after", "1")
    try:
        assert line == f"callbridge sandbox: SIP on 127.0.0.1:{sip_port} (udp)\n"
        with CallbackServer() as callbacks:
            key = asyncio.run(seed(tmp_path / "cb.db", callbacks.url))
            config = tmp_path / "callbridge.toml"
            config.write_text(
                f'[http]\nport = 0\n[sip]\nport = {free_udp_port()}\n'
                f'[trunk]\nmode = "sip"\nhost = "127.0.0.1"\nport = {sip_port}\n'
                '[media]\nrtp_port_min = 42300\nrtp_port_max = 42399\n'
                f'[storage]\ndatabase_url = "sqlite:///{tmp_path}/cb.db"\n'
                f'recordings_dir = "{tmp_path}/recordings"\n')
            server, line = start("serve", "--config", str(config))
            try:
                assert "HTTP on" in line, line
                base = "http://" + line.rsplit("HTTP on ", 1)[1].strip()
                response = httpx.post(f"{base}/calls", headers={"Authorization": f"Bearer {key}"},
                                      json={"from_number": CALLER_ID, "uuid": "crm-standalone",
                                            "agent_number": "9876543400",
                                            "to_number": "9876543104"})
                assert response.status_code == 200, response.text
                payload = json.loads(callbacks.wait_for_sync(1, timeout=20)[0].body)
                assert (payload["status"], payload["hangup_source"]) == ("ANSWER", "destination")
                assert payload["recording_url"].endswith(f"crm_{payload['call_id']}.wav")
            finally:
                assert stop(server) == 0
    finally:
        assert stop(sandbox) == 0


def test_sandbox_on_a_taken_port_exits_1(tmp_path: Path) -> None:
    sip_port = free_udp_port()
    first, _ = start("sandbox", "--port", str(sip_port))
    try:
        result = subprocess.run([sys.executable, "-m", "callbridge", "sandbox", "--port",
                                 str(sip_port)], capture_output=True, text=True, timeout=30,
                                check=False)
        assert result.returncode == 1
        assert "cannot bind the sandbox carrier" in result.stderr
    finally:
        assert stop(first) == 0
