"""Write the tones uas_by_number.xml plays: raw G.711 mu-law, 8000 samples/s, 2 s each.

    .venv/bin/python sipp_scenarios/audio/make_audio.py   # rewrites tone_*.ulaw beside it

SIPp 3.6.1's `rtp_stream` sends a file's bytes as they are, 160 bytes (20 ms) a packet
for payload type 0: it parses no header (a WAV header would be played as noise), so the
files are headerless mu-law. Each tone lasts a whole number of its periods and of 20 ms
packets, so looping the file (`rtp_stream="file,-1,0"`) joins end to start without a click.
The level is -10 dBFS: loud enough to find by FFT, far from mu-law's clipping.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from callbridge.media.g711 import ulaw_encode

RATE = 8000  #: samples per second (PCMU/8000)
SECONDS = 2
TONES_HZ = (440, 600, 1000)
LEVEL = 10 ** (-10 / 20)  #: -10 dBFS, as a fraction of full scale

HERE = Path(__file__).resolve().parent


def tone(hz: int, seconds: int = SECONDS) -> bytes:
    """`seconds` of a sine at `hz`, mu-law encoded (whole seconds: whole periods)."""
    if (RATE * seconds) % 160:
        raise ValueError("the tone must fill whole 20 ms packets to loop without a gap")
    t = np.arange(RATE * seconds) / RATE
    pcm = np.round(LEVEL * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    return ulaw_encode(pcm)


def path_for(hz: int) -> Path:
    return HERE / f"tone_{hz}.ulaw"


def main() -> None:
    for hz in TONES_HZ:
        path_for(hz).write_bytes(tone(hz))
        print(f"wrote {path_for(hz)}")


if __name__ == "__main__":
    main()
