"""WAV header sizes: kept current while recording, and repaired after a crash.

A WAV file is a RIFF chunk (``RIFF`` <size> ``WAVE``) holding a ``fmt `` chunk and a ``data``
chunk. Two of its header fields depend on how much audio follows: the RIFF size at byte 4
(file size - 8) and the ``data`` chunk's size. libsndfile (1.2) writes a provisional header
when it opens a file for writing, RIFF size 8 and data size 0, and the true sizes only when
the file is closed. A process killed in between leaves all of its audio on disk behind a
header that claims none: libsndfile reads on to the end of the file anyway, but browsers and
most players trust the header and play nothing.

Hence two measures:

- while recording, the recorder rewrites both sizes after every batch it appends
  (`patch_sizes`), so a killed recorder's header is at most the last batch behind;
- at start-up, `repair_recordings` finds recordings whose header does not match the file's
  size and rewrites it to cover all the audio there is, in whole frames (a trailing partial
  frame, from a write cut short, is cut off).

The parser here reads only what it needs (``fmt `` for the frame size, where ``data`` starts)
and assumes, as the recorder guarantees, that ``data`` is the last chunk of an unfinished file.
"""

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from callbridge.recordings.naming import parse_recording_name

__all__ = [
    "HEADER_READ_LIMIT",
    "WavHeaderError",
    "WavLayout",
    "patch_sizes",
    "read_layout",
    "recorded_audio",
    "repair_recordings",
    "repair_wav",
]

log = logging.getLogger(__name__)

#: How much of a file's head is read to find the ``data`` chunk. libsndfile's header for our
#: format is 44 bytes; the margin covers writers that put LIST/fact chunks first.
HEADER_READ_LIMIT: Final = 64 * 1024
_U32: Final = struct.Struct("<I")
_CHUNK_HEADER: Final = struct.Struct("<4sI")
#: Offset of nBlockAlign (bytes per frame, all channels) in the ``fmt `` chunk body.
_BLOCK_ALIGN_OFFSET: Final = 12
_PCM_FMT_SIZE: Final = 16


class WavHeaderError(ValueError):
    """The file's head is not a RIFF/WAVE header we can read (too short, wrong magic, no
    ``fmt `` before ``data``...): nothing here can be repaired safely."""


@dataclass(frozen=True)
class WavLayout:
    """What the header says, and where the audio starts."""

    riff_size: int
    #: Bytes per frame (one sample of every channel).
    block_align: int
    #: File offset of the first audio byte (just after the ``data`` chunk header).
    data_offset: int
    data_size: int

    def matches(self, file_size: int) -> bool:
        """Whether the header's sizes fit a file of ``file_size`` bytes: the RIFF chunk
        covers the whole file and ``data`` does not run past its end (other chunks may follow
        it; `repair_wav` also checks that they are chunks, not unaccounted audio)."""
        return self.riff_size + 8 == file_size and self.data_offset + self.data_size <= file_size


def read_layout(head: bytes) -> WavLayout:
    """Parse the start of a WAV file (up to `HEADER_READ_LIMIT` bytes of it)."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise WavHeaderError("not a RIFF/WAVE file")
    (riff_size,) = _U32.unpack_from(head, 4)
    block_align = 0
    offset = 12
    while offset + _CHUNK_HEADER.size <= len(head):
        chunk_id, size = _CHUNK_HEADER.unpack_from(head, offset)
        body = offset + _CHUNK_HEADER.size
        if chunk_id == b"data":
            if not block_align:
                raise WavHeaderError("no usable fmt chunk before the data chunk")
            return WavLayout(riff_size, block_align, body, size)
        if chunk_id == b"fmt ":
            if size < _PCM_FMT_SIZE or body + _PCM_FMT_SIZE > len(head):
                raise WavHeaderError("fmt chunk too short")
            (block_align,) = struct.unpack_from("<H", head, body + _BLOCK_ALIGN_OFFSET)
        # RIFF pads every chunk body to an even length.
        offset = body + size + (size & 1)
    raise WavHeaderError("no data chunk in the file's head")


def patch_sizes(fd: int, data_offset: int, data_bytes: int) -> None:
    """Write the RIFF and data sizes for ``data_bytes`` of audio ending the file, in place.

    ``fd`` must be open for writing; the file position is not used or moved (pwrite).
    """
    os.pwrite(fd, _U32.pack(data_offset + data_bytes - 8), 4)
    os.pwrite(fd, _U32.pack(data_bytes), data_offset - 4)


def repair_wav(path: Path) -> bool:
    """Fix ``path``'s header if it does not match the file; True if it was rewritten.

    Keeps every whole frame after the data chunk header and drops a trailing partial one.
    Raises WavHeaderError if the head cannot be parsed, OSError if the file cannot be opened.
    """
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        file_size = os.fstat(fd).st_size
        layout = read_layout(os.pread(fd, HEADER_READ_LIMIT, 0))
        if layout.matches(file_size) and _only_chunks_follow(fd, layout, file_size):
            return False
        audio = file_size - layout.data_offset
        audio -= audio % layout.block_align
        os.ftruncate(fd, layout.data_offset + audio)
        patch_sizes(fd, layout.data_offset, audio)
        os.fsync(fd)
        return True
    finally:
        os.close(fd)


def _only_chunks_follow(fd: int, layout: WavLayout, file_size: int) -> bool:
    """Whether whatever follows the data chunk is whole chunks (a finished file may end with
    LIST or id3 chunks) rather than audio a crash left beyond the header's data size."""
    offset = layout.data_offset + layout.data_size + (layout.data_size & 1)
    if file_size - offset > HEADER_READ_LIMIT:
        return False
    tail = os.pread(fd, file_size - offset, offset)
    offset = 0
    while offset + _CHUNK_HEADER.size <= len(tail):
        chunk_id, size = _CHUNK_HEADER.unpack_from(tail, offset)
        if not all(0x20 <= byte <= 0x7E for byte in chunk_id):  # a FourCC is printable
            return False
        offset += _CHUNK_HEADER.size + size + (size & 1)
    return offset == len(tail)


def recorded_audio(path: Path) -> int:
    """Bytes of audio ``path``'s header covers; 0 if there is no such file or no WAV."""
    try:
        with open(path, "rb") as wav:
            return read_layout(wav.read(HEADER_READ_LIMIT)).data_size
    except (OSError, WavHeaderError):
        return 0


def repair_recordings(directory: str | Path) -> list[Path]:
    """Repair every unfinished recording in ``directory``; returns the paths rewritten.

    Call at start-up, before any recorder runs: a recording being written right now also has
    a header behind its audio. Only files named exactly ``crm_<uuid4>.wav`` are looked at
    (never anything else an operator keeps there, never through a symlink); one that cannot be
    parsed is logged and left alone.
    """
    repaired: list[Path] = []
    with os.scandir(directory) as entries:
        candidates = sorted(
            Path(entry.path)
            for entry in entries
            if parse_recording_name(entry.name) is not None and entry.is_file(follow_symlinks=False)
        )
    for path in candidates:
        try:
            if repair_wav(path):
                repaired.append(path)
                log.info("repaired the header of unfinished recording %s", path)
        except (OSError, WavHeaderError) as exc:
            log.warning("cannot repair recording %s: %s", path, exc)
    return repaired
