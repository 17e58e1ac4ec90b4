"""The durable record log: checksummed JSON lines, torn writes skipped, deduplicated on read, no
record lost across a restart of its writer, and the ledger rebuilt from it."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from framework.serving.ledger import FeedbackLedger
from framework.serving.recordlog import RecordLog, decode, encode, iter_raw, read_records, segments
from framework.serving.requests import FeedbackItem


def answer(i: int, **extra) -> dict:
    return {"type": "answer", "request_id": f"r{i}", "arm": "a", "kind": "predict", "prediction": "yes",
            "rows": [[float(i)]], "predictions": ["yes"], **extra}


def test_lines_carry_a_checksum_and_torn_lines_are_skipped(tmp_path):
    line = encode({"type": "answer", "request_id": "r1"})
    assert decode(line) == {"type": "answer", "request_id": "r1"}
    assert decode(line[:-5] + b"\n") is None  # cut short
    assert decode(line.replace(b"r1", b"r2")) is None  # bit rot
    assert decode(b"garbage\n") is None and decode(b"") is None
    log = RecordLog(tmp_path, "batch")
    for i in range(3):
        log.append(answer(i))
    log.flush()
    (path,) = segments(tmp_path)
    with open(path, "ab") as f:
        f.write(encode(answer(99))[:20])  # a write torn by a crash
    assert [r["request_id"] for r in iter_raw(tmp_path)] == ["r0", "r1", "r2"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_read_deduplicates_answers_and_feedback_kinds(tmp_path):
    log = RecordLog(tmp_path, "never")
    log.append(answer(1))
    log.append(answer(1, prediction="written again after a restart"))
    log.append({"type": "feedback", "request_id": "r1", "kinds": ["label"], "label": "yes", "arm": "a"})
    log.append({"type": "feedback", "request_id": "r1", "kinds": ["label", "reward"], "label": "no", "reward": 1.0, "arm": "a"})
    log.stop()
    answers, feedback = read_records(tmp_path)
    assert [a["prediction"] for a in answers] == ["yes"]
    assert [f["kinds"] for f in feedback] == [["label"], ["reward"]]


def test_a_burst_with_writer_restarts_loses_no_record(tmp_path):
    """10,000 appends from another thread while the writer (the logging component) is restarted
    five times: every record is in the log, once."""
    log = RecordLog(tmp_path, "batch", flush_interval=0.005).start()
    n = 10_000

    def burst():
        for i in range(n):
            log.append(answer(i))
            if i % 500 == 0:
                time.sleep(0.001)

    sender = threading.Thread(target=burst)
    sender.start()
    for k in range(1, 6):  # each restart while the burst is under way
        while log.stats["appended"] < k * n // 6 and sender.is_alive():
            time.sleep(0.001)
        log.restart_writer()
    sender.join()
    log.stop()
    answers, _ = read_records(tmp_path)
    assert len(answers) == n and log.stats["written"] == n and log.stats["restarts"] == 5
    assert len(segments(tmp_path)) >= 2  # a restarted writer starts a new segment


def test_segments_rotate(tmp_path):
    log = RecordLog(tmp_path, "never", segment_bytes=2_000)
    for i in range(100):
        log.append(answer(i))
        if i % 10 == 0:
            log.flush()
    log.stop()
    assert len(segments(tmp_path)) > 3
    assert len(read_records(tmp_path)[0]) == 100


def test_a_write_error_keeps_the_records_queued(tmp_path, monkeypatch):
    log = RecordLog(tmp_path, "batch")
    log.append(answer(1))
    bad_fd = os.open(os.devnull, os.O_RDONLY)
    os.close(bad_fd)  # a closed descriptor: os.write raises OSError, as on a full or failed disk
    monkeypatch.setattr(log, "_open", lambda: bad_fd)
    assert log.flush() == 0 and log.pending() == 1 and log.stats["write_errors"] == 1
    monkeypatch.undo()
    assert log.flush() == 1 and len(read_records(tmp_path)[0]) == 1


WRITER = """
import sys, time
from framework.serving.recordlog import RecordLog
log = RecordLog(sys.argv[1], "batch", flush_interval=0.001).start()
i = 0
while True:
    log.append({"type": "answer", "request_id": f"r{i}", "arm": "a", "rows": [[1.0] * 50], "predictions": ["yes"]})
    i += 1
    if i % 200 == 0:
        print(log.stats["written"], flush=True)  # written: in the OS's hands, a SIGKILL cannot lose it
        time.sleep(0.001)
"""


@pytest.mark.timeout(60)
def test_sigkill_while_writing_leaves_a_readable_log(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        written = 0
        for line in proc.stdout:
            written = int(line)
            if written >= 2000:
                break
        proc.kill()  # SIGKILL mid-stream
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    answers, _ = read_records(tmp_path)
    ids = [int(a["request_id"][1:]) for a in answers]
    assert len(ids) >= written and ids == list(range(len(ids)))  # a prefix, in order, nothing corrupt


def test_the_ledger_is_rebuilt_from_the_log(tmp_path):
    log = RecordLog(tmp_path, "never")
    log.append(answer(1))
    log.append(answer(2))
    log.append({"type": "feedback", "request_id": "r1", "kinds": ["label"], "label": "yes", "arm": "a",
                "prediction": "yes", "answer_kind": "predict"})
    log.stop()
    ledger = FeedbackLedger(["a"])
    assert ledger.restore(*read_records(tmp_path)) == 2
    assert ledger.summary()["arms"]["a"]["labels"] == 1 and ledger.summary()["arms"]["a"]["correct"] == 1
    again = ledger.accept([FeedbackItem("r1", label="no", kinds=("label",))], batch=False)
    assert again.body["duplicate"] is True
    late = ledger.accept([FeedbackItem("r2", label="yes", kinds=("label",))], batch=False)
    assert late.body["accepted"] == 1 and late.answer_kinds == ["predict"]


def test_ledger_memory_is_bounded_by_instances():
    ledger = FeedbackLedger(["a"], memory=1000, memory_instances=100)
    for i in range(10):
        ledger.remember(f"r{i}", "a", ["x"] * 30, "predict")
    assert len(ledger) == 3  # 3 x 30 instances <= 100
    assert "r9" in ledger and "r0" not in ledger


def test_a_restart_reads_only_the_newest_segments_that_fit(tmp_path):
    log = RecordLog(tmp_path, "never", segment_bytes=1_000)
    for i in range(60):
        log.append(answer(i))
        log.flush()
    log.stop()
    everything = read_records(tmp_path)[0]
    newest = read_records(tmp_path, max_bytes=3_000)[0]
    assert len(everything) == 60 and 0 < len(newest) < 60
    assert newest[-1]["request_id"] == "r59" and newest == everything[-len(newest):]


def test_a_writer_keeps_at_most_max_bytes_on_disk(tmp_path):
    other = tmp_path / "someone-else-00000.log"
    other.write_bytes(encode(answer(0)))
    log = RecordLog(tmp_path, "never", segment_bytes=1_000, max_bytes=5_000)
    for i in range(1, 200):
        log.append(answer(i))
        log.flush()
    log.stop()
    mine = [p for p in segments(tmp_path) if p != other]
    assert sum(p.stat().st_size for p in mine) <= 5_000 + 1_500 and log.stats["segments_deleted"] > 0
    assert other.exists()  # another writer's segment is never deleted
    ids = [a["request_id"] for a in read_records(tmp_path)[0]]
    assert ids[0] == "r0" and ids[-1] == "r199"  # the newest records are kept
