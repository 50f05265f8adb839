"""The pure layers never do I/O or read clocks (DESIGN.md, "Layers")."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "callbridge"
BANNED = {"asyncio", "socket", "time", "random", "logging", "selectors", "threading", "os"}
PURE_MEDIA = {"rtp.py", "g711.py", "dtmf.py", "jitter.py", "mixer.py", "tones.py"}


def pure_modules() -> list[Path]:
    mods = sorted((SRC / "sip").glob("*.py"))
    mods += sorted(p for p in (SRC / "media").glob("*.py") if p.name in PURE_MEDIA)
    mods.append(SRC / "recordings" / "placement.py")  # the recorder's numpy half
    return mods


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", pure_modules(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pure_module_imports_no_io(path: Path) -> None:
    assert not imported_roots(path) & BANNED


def test_the_check_sees_a_banned_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom time import monotonic\n")
    assert imported_roots(bad) & BANNED == {"asyncio", "time"}


def test_pure_layer_is_not_empty() -> None:
    assert len(pure_modules()) >= 4
