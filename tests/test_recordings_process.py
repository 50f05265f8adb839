"""Recordings written by a real child process (`ProcessWriters`), as the server writes them.

The child is the real ``python -m callbridge.recordings.process``; it is killed, stopped and
orphaned with real signals. Audio is synthetic RTP on a fake clock (the recorder reads no
other clock), and every file is read back with soundfile.
"""

import asyncio
import os
import resource
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from callbridge.media.g711 import alaw_encode, ulaw_encode
from callbridge.media.rtp import RtpPacket
from callbridge.recordings.process import ProcessWriters
from callbridge.recordings.recorder import (
    FinishedRecording,
    Recorder,
    RecordingError,
    ThreadWriters,
)
from callbridge.recordings.repair import repair_wav

START = 500.0
RATE = 8000
AGENT, CUSTOMER = "call/agent", "call/customer"


class Clock:
    def __init__(self) -> None:
        self.t = START

    def __call__(self) -> float:
        return self.t


def call_audio(seconds: float) -> list[tuple[float, str, bytes, str]]:
    """A two-party call: the agent's 440 Hz in PCMU, the customer's 1 kHz in PCMA, 20 ms
    packets arriving in order, (arrival, leg, datagram, codec)."""
    t = np.arange(round(seconds * RATE)) / RATE
    agent = ulaw_encode((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
    customer = alaw_encode((8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16))
    packets = []
    for k in range(len(t) // 160):
        arrival = START + 0.02 * k + 0.005
        for leg, pt, codes, codec in ((AGENT, 0, agent, "PCMU"), (CUSTOMER, 8, customer, "PCMA")):
            data = RtpPacket(pt, sequence_number=k, timestamp=160 * k, ssrc=pt + 1,
                             payload=codes[160 * k:160 * k + 160]).serialize()
            packets.append((arrival, leg, data, codec))
    return packets


async def play(rec: Recorder, clock: Clock, seconds: float) -> None:
    """Feed ``seconds`` of call, flushing once a second of call time as the server does; the
    loop runs once after each flush."""
    next_flush = START + 1.0
    for arrival, leg, data, codec in call_audio(seconds):
        while arrival >= next_flush:
            clock.t = next_flush
            rec.flush()
            await asyncio.sleep(0)
            next_flush += 1.0
        clock.t = arrival
        rec.on_audio(leg, data, codec, arrival)


def recorder(path: Path, clock: Clock, writers: ThreadWriters | ProcessWriters) -> Recorder:
    return Recorder(path, start=START, writers=writers, now=clock, left_legs={AGENT})


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * RATE / len(samples)


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def audio_frames(path: Path) -> int:
    """Frames the file holds on disk (what a reader gets whatever the header says)."""
    return (path.stat().st_size - 44) // 4


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped has too)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def ignores(pid: int, *signals: signal.Signals) -> bool:
    """Whether process ``pid`` ignores all of ``signals`` (/proc/PID/status, SigIgn)."""
    with open(f"/proc/{pid}/status") as status:
        mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigIgn:"))
    return all(mask >> (number - 1) & 1 for number in signals)


@contextmanager
def stopped(writers: ProcessWriters) -> Iterator[None]:
    """The writer process stopped (SIGSTOP) for the block, as if stalled on its disk."""
    pid = writers.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def in_loop(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


def test_the_process_writes_what_a_thread_writes(tmp_path: Path) -> None:
    async def test() -> None:
        writers = ProcessWriters()
        with ThreadPoolExecutor(2) as pool:
            results: list[FinishedRecording] = []
            for name, chosen in (("thread", ThreadWriters(pool)), ("process", writers)):
                clock = Clock()
                rec = recorder(tmp_path / f"{name}.wav", clock, chosen)
                await play(rec, clock, 3.0)
                results.append(await rec.close(START + 3.0))
        await writers.aclose()
        by_thread, by_process = results
        assert by_process == FinishedRecording(
            tmp_path / "process.wav", 3.0, 300, 0, 0, 0, 0)
        assert by_thread.packets == by_process.packets
        thread_audio, _ = sf.read(tmp_path / "thread.wav", dtype="int16")
        process_audio, _ = sf.read(tmp_path / "process.wav", dtype="int16")
        np.testing.assert_array_equal(thread_audio, process_audio)
        assert dominant_hz(process_audio[8000:16000, 0]) == pytest.approx(440, abs=2)
        assert dominant_hz(process_audio[8000:16000, 1]) == pytest.approx(1000, abs=2)

    in_loop(test)


def test_a_killed_writer_costs_its_recordings_not_the_next_one(tmp_path: Path) -> None:
    async def test() -> None:
        writers = ProcessWriters()
        clock = Clock()
        first = tmp_path / "first.wav"
        rec = recorder(first, clock, writers)
        await play(rec, clock, 3.0)  # flushed at 1 s and 2 s: 1.8 s written
        await until(lambda: first.exists() and audio_frames(first) >= 1.8 * RATE,
                    "the first 1.8 s on disk")
        pid = writers.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(RecordingError, match="writer process exited"):
            await rec.close(START + 3.0)
        with pytest.raises(RecordingError):  # every time
            await rec.close()

        # What the writer had written is kept, in a file whose header is right.
        assert not repair_wav(first)
        kept, _ = sf.read(first, dtype="int16")
        assert len(kept) == 1.8 * RATE
        assert dominant_hz(kept[4000:12000, 0]) == pytest.approx(440, abs=2)
        assert dominant_hz(kept[4000:12000, 1]) == pytest.approx(1000, abs=2)

        # The next recording gets a new writer.
        clock = Clock()
        rec = recorder(tmp_path / "second.wav", clock, writers)
        assert writers.pid not in (None, pid)
        await play(rec, clock, 2.0)
        result = await rec.close(START + 2.0)
        assert result.duration == 2.0
        assert result.packets == 200
        await writers.aclose()

    in_loop(test)


def test_a_stalled_writer_never_holds_up_the_loop(tmp_path: Path) -> None:
    async def test() -> None:
        writers = ProcessWriters(backlog_limit=64 * 1024, send_buffer=64 * 1024, finish_timeout=0.5)
        clock = Clock()
        path = tmp_path / "stalled.wav"
        rec = recorder(path, clock, writers)
        with stopped(writers):
            # 30 s of call against a stopped writer: the socket fills, then the backlog, then
            # batches are dropped. Were a send to block, this would hang the loop (and the
            # test's timeout would say so).
            await play(rec, clock, 30.0)
            with pytest.raises(RecordingError, match=r"did not finish it within 0\.5 s"):
                await rec.close(START + 30.0)

        # The writer gets back to work.
        await until(lambda: writers.backlog == 0, "the backlog sent")
        writers.finish_timeout = 30.0
        clock = Clock()
        rec = recorder(tmp_path / "after.wav", clock, writers)
        await play(rec, clock, 2.0)
        result = await rec.close(START + 2.0)
        assert (result.duration, result.packets, result.dropped) == (2.0, 200, 0)
        await writers.aclose()

    in_loop(test)


def test_dropped_batches_are_counted_and_leave_silence(tmp_path: Path) -> None:
    async def test() -> None:
        writers = ProcessWriters(backlog_limit=64 * 1024, send_buffer=64 * 1024)
        clock = Clock()
        path = tmp_path / "gappy.wav"
        rec = recorder(path, clock, writers)
        with stopped(writers):
            await play(rec, clock, 30.0)
        result = await rec.close(START + 30.0)
        await writers.aclose()

        assert result.dropped > 0
        assert result.packets + result.dropped + result.late == 3000
        audio, _ = sf.read(path, dtype="int16")
        assert len(audio) == 30 * RATE  # one minute of call is one minute of WAV
        seconds = audio[: 30 * RATE].reshape(30, RATE, 2)
        silent = sum(1 for second in seconds if not second.any())
        assert silent >= result.dropped // 100 - 1  # 100 packets a second, both legs
        assert dominant_hz(seconds[0, :, 0]) == pytest.approx(440, abs=2)

    in_loop(test)


def test_close_now_blocks_on_the_process(tmp_path: Path) -> None:
    async def test() -> None:
        writers = ProcessWriters()
        clock = Clock()
        rec = recorder(tmp_path / "now.wav", clock, writers)
        await play(rec, clock, 2.0)
        result = rec.close_now(START + 2.0)  # on the loop's thread, the loop held
        assert (result.duration, result.packets) == (2.0, 200)
        assert await rec.close() == result
        await writers.aclose()

    in_loop(test)


def test_a_write_error_comes_back_with_its_cause(tmp_path: Path) -> None:
    async def test() -> None:
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("")
        writers = ProcessWriters()
        clock = Clock()
        rec = recorder(blocker / "call.wav", clock, writers)
        await play(rec, clock, 2.0)
        with pytest.raises(RecordingError) as info:
            await rec.close(START + 2.0)
        assert isinstance(info.value.__cause__, OSError)
        # The writer itself is fine: the next recording is written.
        rec = recorder(tmp_path / "fine.wav", Clock(), writers)
        assert (await rec.close(START + 1.0)).duration == 1.0
        await writers.aclose()

    in_loop(test)


def test_an_idle_priority_writer_ctrl_c_does_not_end_and_aclose_does(tmp_path: Path) -> None:
    async def test() -> None:
        writers = ProcessWriters()
        clock = Clock()
        rec = recorder(tmp_path / "call.wav", clock, writers)
        pid = writers.pid
        assert pid is not None
        assert os.getpgid(pid) != os.getpgid(0)  # a Ctrl-C in the terminal goes elsewhere
        await until(lambda: ignores(pid, signal.SIGINT, signal.SIGTERM), "the writer set up")
        # Set up before the signals: it never preempts the relay for a core.
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)  # systemd's stop, sent to the whole service
        await play(rec, clock, 2.0)
        assert (await rec.close(START + 2.0)).packets == 200
        assert not gone(pid)
        await writers.aclose()
        assert gone(pid)
        assert writers.pid is None

    in_loop(test)


ORPHAN = textwrap.dedent("""
    import asyncio, sys, time
    sys.path[:0] = [sys.argv[2]]
    from pathlib import Path
    from test_recordings_process import START, Clock, play, recorder
    from callbridge.recordings.process import ProcessWriters

    async def main():
        writers = ProcessWriters()
        clock = Clock()
        rec = recorder(Path(sys.argv[1]), clock, writers)
        await play(rec, clock, 3.5)  # flushed at 1, 2 and 3 s: 2.8 s handed over
        print(writers.pid, flush=True)
        await asyncio.sleep(60)  # killed long before

    asyncio.run(main())
""")


def test_a_killed_server_leaves_its_writer_to_finish_the_files(tmp_path: Path) -> None:
    path = tmp_path / "orphan.wav"
    with subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(path), str(Path(__file__).parent)],
        stdout=subprocess.PIPE, text=True,
    ) as server:
        try:
            assert server.stdout is not None
            ready, _, _ = select.select([server.stdout], [], [], 30)
            assert ready, "the server never reported its writer"
            writer = int(server.stdout.readline())
            deadline = time.monotonic() + 10
            while not (path.exists() and audio_frames(path) >= 2.8 * RATE):
                assert time.monotonic() < deadline, "the writer never wrote 2.8 s"
                time.sleep(0.01)
            server.kill()
            server.wait(10)
            deadline = time.monotonic() + 10
            while not gone(writer):
                assert time.monotonic() < deadline, "the orphaned writer did not exit"
                time.sleep(0.01)
        finally:
            server.kill()
    assert not repair_wav(path)  # finished: nothing for start-up repair to do
    audio, _ = sf.read(path, dtype="int16")
    assert len(audio) == 2.8 * RATE
    assert dominant_hz(audio[-8000:, 0]) == pytest.approx(440, abs=2)
    assert dominant_hz(audio[-8000:, 1]) == pytest.approx(1000, abs=2)


def test_a_writer_that_cannot_start_fails_the_recording_not_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def test() -> None:
        writers = ProcessWriters()
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
        clock = Clock()
        rec = recorder(tmp_path / "lost.wav", clock, writers)  # does not raise
        await play(rec, clock, 2.0)
        with pytest.raises(RecordingError, match="cannot start the recordings writer"):
            await rec.close(START + 2.0)
        monkeypatch.undo()
        clock = Clock()
        rec = recorder(tmp_path / "next.wav", clock, writers)  # started this time
        await play(rec, clock, 1.0)
        assert (await rec.close(START + 1.0)).packets == 100
        await writers.aclose()

    in_loop(test)


def test_an_exit_the_loop_has_not_read_yet_gets_a_new_writer(tmp_path: Path) -> None:
    async def test() -> None:
        writers = ProcessWriters()
        first = recorder(tmp_path / "first.wav", Clock(), writers)
        pid = writers.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not gone(pid):  # waiting without the loop: its EOF stays unread
            assert time.monotonic() < deadline, "the killed writer did not exit"
            time.sleep(0.001)
        clock = Clock()
        rec = recorder(tmp_path / "second.wav", clock, writers)  # before the loop saw EOF
        assert writers.pid not in (None, pid)
        await play(rec, clock, 1.0)
        assert (await rec.close(START + 1.0)).packets == 100
        with pytest.raises(RecordingError, match="exit"):
            await first.close(START + 1.0)
        await writers.aclose()

    in_loop(test)


def test_close_now_during_close_waits_for_the_same_answer(tmp_path: Path) -> None:
    async def test() -> None:
        writers = ProcessWriters()
        # close_now at every step of a close in flight: before its finish is sent, while it
        # waits, once its reply is read but not yet taken.
        for steps in range(12):
            clock = Clock()
            rec = recorder(tmp_path / f"twice-{steps}.wav", clock, writers)
            await play(rec, clock, 1.0)
            closing = asyncio.ensure_future(rec.close(START + 1.0))
            for _ in range(steps):
                await asyncio.sleep(0)
            now = rec.close_now(START + 1.0)
            assert (now.duration, now.packets) == (1.0, 100), steps
            assert await closing == now
        await writers.aclose()

    in_loop(test)


def test_close_now_after_the_loop_has_closed(tmp_path: Path) -> None:
    path = tmp_path / "late.wav"
    clock = Clock()
    writers = ProcessWriters(send_buffer=64 * 1024)

    async def call() -> Recorder:
        rec = recorder(path, clock, writers)
        for arrival, leg, data, codec in call_audio(20.0):  # no flush: one 700 KB batch
            rec.on_audio(leg, data, codec, arrival)
        return rec

    rec = asyncio.run(call())
    result = rec.close_now(START + 20.0)  # no loop: the frame goes out blocking
    assert (result.duration, result.packets) == (20.0, 2000)
    pid = writers.pid
    assert pid is not None
    writers.close()
    assert gone(pid)


def test_close_now_with_the_socket_above_fd_1024(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1200:
        pytest.skip("the hard open-file limit is under 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        async def test() -> None:
            writers = ProcessWriters()
            clock = Clock()
            rec = recorder(tmp_path / "high.wav", clock, writers)
            await play(rec, clock, 1.0)
            assert (rec.close_now(START + 1.0)).packets == 100
            await writers.aclose()

        in_loop(test)
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_recordings_opened_after_aclose_fail_without_a_writer(tmp_path: Path) -> None:
    async def test() -> None:
        writers = ProcessWriters()
        rec = recorder(tmp_path / "before.wav", Clock(), writers)
        assert (await rec.close(START + 1.0)).duration == 1.0
        await writers.aclose()
        rec = recorder(tmp_path / "after.wav", Clock(), writers)
        assert writers.pid is None
        with pytest.raises(RecordingError, match="server is stopping"):
            await rec.close(START + 1.0)

    in_loop(test)


def test_a_writer_behind_leaves_idle_priority_until_it_catches_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def test() -> None:
        writers = ProcessWriters(send_buffer=64 * 1024)
        clock = Clock()
        rec = recorder(tmp_path / "behind.wav", clock, writers)
        pid = writers.pid
        assert pid is not None
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
        with stopped(writers):  # as if starved: its socket fills
            await play(rec, clock, 10.0)
            assert writers.backlog > 0
            if os.geteuid() == 0:  # CAP_SYS_NICE: raised to a low ordinary priority
                assert os.sched_getscheduler(pid) == os.SCHED_OTHER
                assert os.getpriority(os.PRIO_PROCESS, pid) > os.getpriority(os.PRIO_PROCESS, 0)
            else:
                assert os.sched_getscheduler(pid) == os.SCHED_IDLE
                assert "may not leave idle priority" in caplog.text
        await until(lambda: writers.backlog == 0, "the backlog sent")
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE  # caught up: idle again
        assert (await rec.close(START + 10.0)).packets == 1000
        await writers.aclose()

    in_loop(test)
