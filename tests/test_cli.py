"""The `callbridge` command: `config check`, `--version`, and config errors on stderr."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from callbridge import __version__
from callbridge.cli import main

LISTEN_PORT = "must be an integer 0..65535 (0: any free port)"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m callbridge ARGS` with no CALLBRIDGE_* variables but those in ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "callbridge", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("CALLBRIDGE_")]:
        monkeypatch.delenv(name)


def test_config_check_prints_effective_settings(tmp_path: Path) -> None:
    config = tmp_path / "callbridge.toml"
    config.write_text('[sip]\nport = 5080\n[trunk]\nhost = "sip.example.net"\n')
    result = run("config", "check", "--config", str(config), env={"CALLBRIDGE_HTTP_PORT": "9090"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    shown = tomllib.loads(result.stdout)
    assert shown["sip"]["port"] == 5080
    assert shown["http"]["port"] == 9090
    assert (shown["trunk"]["mode"], shown["trunk"]["host"]) == ("sip", "sip.example.net")
    assert shown["log"]["level"] == "info"


def test_config_check_without_a_file_shows_the_sandbox_default() -> None:
    result = run("config", "check")
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["trunk"]["mode"] == "sandbox"


def test_config_check_on_a_bad_value_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "callbridge.toml"
    config.write_text('[sip]\nport = "abc"\n')
    result = run("config", "check", "--config", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "callbridge: config error: sip.port: " + LISTEN_PORT + ", got 'abc'\n"
    )


def test_config_check_on_a_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "callbridge.toml"
    config.write_text("[sip]\nport = 5060\nhost 127.0.0.1\n")
    result = run("config", "check", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(f"callbridge: config error: {config}: invalid TOML: ")
    assert "line 3" in result.stderr


def test_config_check_refuses_an_unknown_environment_variable() -> None:
    result = run("config", "check", env={"CALLBRIDGE_FOO_BAR": "1"})
    assert result.returncode == 2
    assert result.stderr.startswith("callbridge: config error: CALLBRIDGE_FOO_BAR: ")


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout == f"callbridge {__version__}\n"


def test_help_does_not_need_the_server() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "serve" in result.stdout and "config" in result.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, callbridge.cli; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "callbridge.b2bua" not in probe.stdout


def test_main_returns_the_exit_status(
    tmp_path: Path, clean_environ: None, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[log]\nlevel = "debug"\n')
    assert main(["config", "check", "--config", str(good)]) == 0
    assert 'level = "debug"' in capsys.readouterr().out
    assert main(["config", "check", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["no-such-command"]) == 2
    assert main(["config"]) == 2


def test_serve_stops_at_a_config_error_before_starting_anything(
    tmp_path: Path, clean_environ: None, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[trunk]\nmode = "sip"\n')
    assert main(["serve", "--config", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("callbridge: config error: trunk.host: ")
