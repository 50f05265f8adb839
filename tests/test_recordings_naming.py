"""Recording names: exactly crm_<uuid4>.wav, nothing else (the name is also a URL path)."""

import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.recordings.naming import parse_recording_name, recording_name, recording_path

CALL_ID = "3f2a9c4e-8b1d-4e6f-a0c2-5d7e9f1b3a4c"
UUID1 = "c232ab00-9414-11ec-b3c8-9f6bdeced846"  # time-based, version 1


def test_name_and_path() -> None:
    assert recording_name(CALL_ID) == f"crm_{CALL_ID}.wav"
    assert recording_name(uuid.UUID(CALL_ID)) == f"crm_{CALL_ID}.wav"
    assert recording_path("/var/rec", CALL_ID) == Path(f"/var/rec/crm_{CALL_ID}.wav")
    assert recording_path(Path("rec"), CALL_ID).parent == Path("rec")


def test_fresh_uuid4s_round_trip() -> None:
    for _ in range(200):
        call_id = str(uuid.uuid4())
        assert parse_recording_name(recording_name(call_id)) == call_id


@pytest.mark.parametrize(
    "name",
    [
        f"../crm_{CALL_ID}.wav",
        f"crm_{CALL_ID}.wav/../../etc/passwd",
        f"dir/crm_{CALL_ID}.wav",
        f"crm_{CALL_ID}/.wav",
        "crm_..%2f..%2fetc.wav",
        f"crm_{CALL_ID.upper()}.wav",
        f"CRM_{CALL_ID}.wav",
        f"crm_{CALL_ID}.WAV",
        f"crm_{CALL_ID}.mp3",
        f"crm_{CALL_ID}.wav.bak",
        f"crm_{CALL_ID}.wav\n",
        f"crm_{CALL_ID}.wav\x00",
        f" crm_{CALL_ID}.wav",
        f"crm_{CALL_ID}",
        f"{CALL_ID}.wav",
        f"crm_{{{CALL_ID}}}.wav",
        f"crm_{CALL_ID.replace('-', '')}.wav",
        "crm_not-a-uuid.wav",
        "crm_.wav",
        "",
        # UUIDs of other versions, or with the wrong variant bits.
        f"crm_{UUID1}.wav",
        "crm_3f2a9c4e-8b1d-5e6f-a0c2-5d7e9f1b3a4c.wav",
        "crm_3f2a9c4e-8b1d-4e6f-c0c2-5d7e9f1b3a4c.wav",
        # Digits that are not ASCII (Arabic-Indic) but still "digits" to \d.
        "crm_\u0663f2a9c4e-8b1d-4e6f-a0c2-5d7e9f1b3a4c.wav",
    ],
)
def test_anything_else_is_refused(name: str) -> None:
    assert parse_recording_name(name) is None


@pytest.mark.parametrize("call_id", ["", "../x", CALL_ID.upper(), f"{CALL_ID}\n", UUID1])
def test_only_uuid4_call_ids_make_names(call_id: str) -> None:
    with pytest.raises(ValueError, match="UUID4"):
        recording_name(call_id)
    with pytest.raises(ValueError, match="UUID4"):
        recording_path("rec", call_id)


@given(st.text(max_size=60))
def test_parse_accepts_only_what_recording_name_makes(name: str) -> None:
    call_id = parse_recording_name(name)
    assert call_id is None or recording_name(call_id) == name
