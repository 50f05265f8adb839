"""Recording file names: ``crm_<call_id>.wav``, call_id a random UUID4 (DESIGN.md, Recordings).

The name is also the public URL path (``/recordings/crm_<call_id>.wav``), so the parser that
turns a requested name back into a call id is a security boundary: it accepts exactly the
names this module produces and nothing else. Only the canonical form passes, lower-case hex
in 8-4-4-4-12 groups with the UUID version 4 and RFC 4122 variant nibbles, ``.wav`` in lower
case, so that one call has exactly one name (no ``CRM_...WAV`` twin on a case-insensitive
disk) and no separator, dot-dot, NUL or trailing newline can ride along.
"""

import re
import uuid
from pathlib import Path
from typing import Final

__all__ = ["parse_recording_name", "recording_name", "recording_path"]

#: A canonical UUID4 string, RFC 4122 §3 (lower case on output) and §4.4 (version nibble 4,
#: variant bits 10xx so the 17th hex digit is 8, 9, a or b). Explicit [0-9a-f] classes, not
#: ``\d`` or IGNORECASE, which would admit other Unicode digits or upper case.
_UUID4: Final = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
_CALL_ID: Final = re.compile(_UUID4)
_NAME: Final = re.compile(f"crm_({_UUID4})\\.wav")


def _checked_call_id(call_id: str | uuid.UUID) -> str:
    text = str(call_id)
    # fullmatch, not match with "$": "$" also matches before a trailing newline.
    if _CALL_ID.fullmatch(text) is None:
        raise ValueError(f"call id must be a lower-case UUID4 string, got {text!r}")
    return text


def recording_name(call_id: str | uuid.UUID) -> str:
    """``crm_<call_id>.wav``; ValueError unless ``call_id`` is a canonical UUID4."""
    return f"crm_{_checked_call_id(call_id)}.wav"


def recording_path(directory: str | Path, call_id: str | uuid.UUID) -> Path:
    """Where the recording of ``call_id`` lives in ``directory``."""
    return Path(directory) / recording_name(call_id)


def parse_recording_name(name: str) -> str | None:
    """The call id in a name that is exactly ``crm_<uuid4>.wav``, else None."""
    match = _NAME.fullmatch(name)
    return None if match is None else match.group(1)
