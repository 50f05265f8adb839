"""Calls a crash left unfinished are ended at start-up, each with its callback."""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from callbridge.b2bua.calls import CallService
from callbridge.config import load_settings
from callbridge.recordings.recorder import ThreadWriters
from callbridge.store import open_store
from callbridge.store.models import Call, CallStatus, Leg, LegRole, LegStatus
from callbridge.webhooks.signing import new_secret


def test_recover_ends_crashed_calls_with_callbacks_and_their_recordings(tmp_path: Path) -> None:
    settings = load_settings(None, {
        "CALLBRIDGE_STORAGE_DATABASE_URL": f"sqlite:///{tmp_path}/cb.db",
        "CALLBRIDGE_STORAGE_RECORDINGS_DIR": str(tmp_path / "recordings"),
    })
    bridged, ringing = str(uuid.uuid4()), str(uuid.uuid4())

    async def body() -> list[dict[str, Any]]:
        store = await open_store(settings.storage.database_url)
        try:
            account = await store.create_account("acme", "http://127.0.0.1:9/cb", new_secret())
            for call_id, status, legs in (
                (bridged, CallStatus.ANSWER, (LegStatus.JOINED, LegStatus.JOINED)),
                (ringing, CallStatus.INITIATED, (LegStatus.DIALING,)),
            ):
                await store.create_call(Call(
                    call_id, account.id, f"crm-{call_id}", "+919800000000", "+919876543100",
                    "+919876543400", None, True, 30, "h" * 64, call_status=status,
                    start_time=datetime.now(UTC) if status is CallStatus.ANSWER else None,
                    legs=tuple(Leg(call_id, n, LegRole.AGENT if n == 1 else LegRole.DESTINATION,
                                   "+919876543400", s) for n, s in enumerate(legs, 1))))
            (tmp_path / "recordings").mkdir()
            (tmp_path / "recordings" / f"crm_{bridged}.wav").write_bytes(b"RIFF")
            woken: list[bool] = []
            with ThreadPoolExecutor(1) as executor:
                service = CallService(settings, store, None, None,  # type: ignore[arg-type]
                                      ThreadWriters(executor),
                                      on_finished=lambda: woken.append(True))
                assert await service.recover() == 2
            assert woken == [True]
            assert await store.unfinished_calls() == []
            entries = await store.list_callbacks(account.id)
            return [json.loads(entry.payload) for entry in entries]
        finally:
            await store.close()

    payloads = {p["call_id"]: p for p in asyncio.run(body())}
    assert payloads[bridged]["status"] == "ANSWER"
    assert payloads[bridged]["hangup_source"] == "system"
    assert payloads[bridged]["recording_url"].endswith(f"/recordings/crm_{bridged}.wav")
    assert [leg["status"] for leg in payloads[bridged]["legs"]] == ["LEFT", "LEFT"]
    assert payloads[ringing]["status"] == "FAILED"
    assert payloads[ringing]["recording_url"] is None
    assert [leg["status"] for leg in payloads[ringing]["legs"]] == ["FAILED"]
