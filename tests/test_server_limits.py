"""`callbridge serve` raises its soft open-file limit to fit the RTP port range (one socket per
call leg): a service started at the usual soft limit of 1,024 would otherwise fail calls with
EMFILE at about 500 two-party calls. Run in a child process whose limits the test sets."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def limits_after(soft: int, hard: int, wanted: int) -> tuple[int, int, int]:
    """(returned, soft, hard) in a child starting at ``soft``/``hard``, asking for ``wanted``."""
    code = textwrap.dedent(f"""
        import resource
        from callbridge.server import raise_open_file_limit
        resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
        got = raise_open_file_limit({wanted})
        print(got, *resource.getrlimit(resource.RLIMIT_NOFILE))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    returned, now_soft, now_hard = (int(n) for n in out)
    return returned, now_soft, now_hard


def test_the_soft_limit_is_raised_to_what_the_rtp_range_needs() -> None:
    assert limits_after(soft=256, hard=8192, wanted=6024) == (6024, 6024, 8192)


def test_the_hard_limit_caps_the_raise_and_is_reported() -> None:
    returned, soft, hard = limits_after(soft=256, hard=2048, wanted=6024)
    assert (returned, soft, hard) == (2048, 2048, 2048)  # the caller warns: 2048 < 6024


def test_a_higher_soft_limit_is_never_lowered() -> None:
    assert limits_after(soft=4096, hard=8192, wanted=1500) == (4096, 4096, 8192)
