"""``GET``/``HEAD /recordings/{filename}``: the WAV files, with byte ranges (RFC 9110 §14).

The filename is the access control (the spec: an unguessable per-call name), so it must be
exactly ``crm_<uuid4>.wav`` (:func:`callbridge.recordings.naming.parse_recording_name`), and
the file is opened with ``O_NOFOLLOW`` inside ``[storage] recordings_dir``: a symlink planted
there is not followed, and anything that is not a regular file is 404, as is every other name.

Ranges, as RFC 9110 §14.2 and §15.3.7 allow a server to choose:

- one ``bytes=`` range (``0-99``, ``100-``, ``-50``) is answered 206 with ``Content-Range``; a
  last position past the end is clamped to the end;
- one range that starts at or past the end (or ``-0``, or any range of an empty file) is 416
  with ``Content-Range: bytes */<size>``;
- a header with several ranges, another unit, or bad syntax is ignored: 200 with the whole
  file (a player asking for several ranges at once is rare, and multipart bodies are not
  worth their cost here);
- ``If-Range`` (§13.1.5) holding anything but our current ETag or Last-Modified makes the
  Range ignored, so a resumed download of a file that changed is not spliced together.
"""

from __future__ import annotations

import email.utils
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from callbridge.api.errors import ApiError
from callbridge.recordings.naming import parse_recording_name

__all__ = ["ByteRange", "RangeNotSatisfiable", "parse_range", "serve_recording"]

CHUNK = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``first`` to ``last`` inclusive, as in ``Content-Range``."""

    first: int
    last: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1


class RangeNotSatisfiable(Exception):
    """The single requested range lies outside the file (RFC 9110 §15.5.17)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range to send of a ``size``-byte file: None for the whole file (no header, or one
    to ignore); ``RangeNotSatisfiable`` for a single range that misses the file."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return None  # absent, several ranges, another unit, or malformed: ignored
    first_text, last_text = match.groups()
    if first_text:
        first = int(first_text)
        if last_text and int(last_text) < first:
            return None  # §14.1.1: an invalid range-spec; the header is ignored
        if first >= size:
            raise RangeNotSatisfiable
        return ByteRange(first, min(int(last_text or size - 1), size - 1))
    if not last_text:
        return None  # "bytes=-"
    suffix = int(last_text)
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiable
    return ByteRange(max(size - suffix, 0), size - 1)


async def serve_recording(request: Request, directory: str | Path) -> Response:
    """The route's body: find the file, choose what to send, send it."""
    name = request.path_params["filename"]
    fd = _open(Path(directory), name)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _not_found()
        response = _respond(request, fd, info)
    except BaseException:
        os.close(fd)
        raise
    return response


def _open(directory: Path, name: str) -> int:
    if parse_recording_name(name) is None:
        raise _not_found()
    try:
        # O_NOFOLLOW: a symlink in the last component fails (ELOOP) instead of being followed.
        # The name has no separator, so there is no other component inside the directory.
        return os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        raise _not_found() from None


def _respond(request: Request, fd: int, info: os.stat_result) -> Response:
    size = info.st_size
    etag = f'"{info.st_size:x}-{info.st_mtime_ns:x}"'
    modified = email.utils.formatdate(info.st_mtime, usegmt=True)
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": modified}
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() not in (etag, modified):
        wanted = None
    try:
        byte_range = parse_range(wanted, size)
    except RangeNotSatisfiable:
        raise ApiError(416, "RANGE_NOT_SATISFIABLE", f"the recording has {size} bytes",
                       {"Content-Range": f"bytes */{size}", **headers}) from None
    body = request.method != "HEAD"
    if byte_range is None:
        return FileSlice(fd, 0, size, 200, headers, body=body)
    headers["Content-Range"] = f"bytes {byte_range.first}-{byte_range.last}/{size}"
    return FileSlice(fd, byte_range.first, byte_range.length, 206, headers, body=body)


class FileSlice(Response):
    """``length`` bytes of an open file from ``offset``; closes the file when done.

    Reads happen in a worker thread, one chunk at a time, so a slow disk never stalls the
    event loop the SIP and RTP layers share. A client that goes away ends the loop at the
    next send (the server raises OSError there, ASGI 2.4), and the file is closed either way.
    """

    media_type = "audio/wav"

    def __init__(self, fd: int, offset: int, length: int, status_code: int,
                 headers: dict[str, str], *, body: bool) -> None:
        self.fd, self.offset, self.length, self.send_body = fd, offset, length, body
        self.status_code = status_code
        self.background = None
        self.init_headers({**headers, "Content-Length": str(length),
                           "Content-Type": self.media_type})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            if self.send_body:
                await self._send_body(send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            os.close(self.fd)

    async def _send_body(self, send: Send) -> None:
        position, end = self.offset, self.offset + self.length
        while position < end:
            size = min(CHUNK, end - position)
            chunk = await anyio.to_thread.run_sync(os.pread, self.fd, size, position)
            if not chunk:
                # Truncated under us: Content-Length can no longer be met. Raising makes
                # the server drop the connection, so the client sees a short body as such.
                raise RuntimeError(f"recording shrank to {position} bytes while being sent")
            position += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})


def _not_found() -> ApiError:
    return ApiError(404, "RECORDING_NOT_FOUND", "no such recording")
