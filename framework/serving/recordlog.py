"""The durable record log: every served answer and every accepted feedback item, on local disk.

Why: a replica's memory (the feedback ledger, the served-record buffer) dies with the replica;
feedback for an answer served before a restart must still join it, and monitors must still see
what was served. Design, in order of what matters:

* **Nothing on the request path but a ``deque.append``** of objects the request already built.
  A writer thread (the logging component) drains the queue every ``flush_interval`` seconds,
  serialises the batch and writes it with one ``os.write``, then ``fsync``\\s it (policy
  ``"batch"``) or leaves that to the OS (``"never"``).
* **Crash-safe lines**: JSON Lines, each prefixed by the CRC-32 of its JSON (``crc32hex json\\n``).
  A line cut short by a SIGKILL or a torn write fails its checksum and is skipped on read; the
  lines before it are intact because segments are append-only.
* **One writer per file**: each replica appends to its own segment files
  (``<writer>-<n>.log``), rotated at ``segment_bytes``; readers merge every segment.
* **At least once, deduplicated on read**: a replica may write a record again after a restart
  (the ledger is rebuilt from the log); ``read_records`` keeps the first answer per request id
  and the first feedback per (request id, kind).
* **Restarting the logging component loses nothing**: records wait in the owner's queue while
  ``restart_writer()`` stops the thread (after a last flush) and starts a new one on a new segment.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
import zlib
from collections import deque
from pathlib import Path
from typing import Iterator

log = logging.getLogger("ray.serve")

FSYNC_POLICIES = ("batch", "never")
SEGMENT_BYTES = 64 * 1024 * 1024
#: the most one writer keeps on disk: its oldest closed segments are deleted past it, so a flood
#: of requests cannot fill the disk (a restarted replica reads back the newest 256 MB anyway)
MAX_BYTES = 4 * 1024 * 1024 * 1024
FLUSH_INTERVAL_S = 0.02
#: records waiting for the writer before the oldest are dropped (and counted): bounded memory
#: if the disk stalls for minutes; about 1 KB each
MAX_PENDING = 500_000
SUFFIX = ".log"


def encode(record: dict) -> bytes:
    body = json.dumps(record, separators=(",", ":"), default=str, allow_nan=False).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def decode(line: bytes) -> dict | None:
    """The record of one line, or None when it is torn or corrupt (wrong checksum, bad JSON)."""
    if len(line) < 10 or line[8:9] != b" " or not line.endswith(b"\n"):
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class RecordLog:
    """An append-only log in ``directory`` owned by one writer (one replica)."""

    def __init__(self, directory: str | os.PathLike, fsync: str = "batch", *, segment_bytes: int = SEGMENT_BYTES,
                 flush_interval: float = FLUSH_INTERVAL_S, max_pending: int = MAX_PENDING, writer_id: str | None = None,
                 max_bytes: int = MAX_BYTES):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"record log fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fsync = fsync
        self.segment_bytes = int(segment_bytes)
        self.max_bytes = int(max_bytes)
        self._closed: deque[Path] = deque()  # this writer's closed segments, oldest first
        self._path: Path | None = None
        self.flush_interval = float(flush_interval)
        self.max_pending = int(max_pending)
        self.writer_id = writer_id or f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self._pending: deque = deque()
        self._segment = 0
        self._fd: int | None = None
        self._size = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self.stats = {"appended": 0, "written": 0, "dropped": 0, "batches": 0, "write_errors": 0, "restarts": 0,
                      "unencodable": 0, "segments_deleted": 0}

    # -- the request path ----------------------------------------------------------------------
    def append(self, record: dict) -> None:
        """Queue one record (no I/O, no serialisation here)."""
        pending = self._pending
        pending.append(record)
        self.stats["appended"] += 1
        if len(pending) > self.max_pending:
            pending.popleft()
            self.stats["dropped"] += 1

    # -- the logging component -----------------------------------------------------------------
    def start(self) -> "RecordLog":
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="record-log-writer", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the writer after writing everything queued so far; the file is closed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
        self._close()

    def restart_writer(self) -> None:
        """Stop the writer and start a new one on a new segment; records queued meanwhile wait."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._write_lock:
            self._close()
        self.stats["restarts"] += 1
        self.start()

    def flush(self) -> int:
        """Write (and, per policy, fsync) everything queued; returns the number of records written."""
        with self._write_lock:
            batch = []
            pending = self._pending
            while pending:
                batch.append(pending.popleft())
            if not batch:
                return 0
            lines = []
            for record in batch:
                try:
                    lines.append(encode(record))
                except (TypeError, ValueError):  # NaN cannot be in one: inputs are validated finite
                    self.stats["unencodable"] += 1
                    log.error("record log: record of request %s cannot be written as JSON", record.get("request_id"))
            data = b"".join(lines)
            try:
                fd = self._open()
                os.write(fd, data)
                if self.fsync == "batch":
                    os.fsync(fd)
            except OSError:
                self.stats["write_errors"] += 1
                log.exception("record log: writing %d records to %s failed; they stay queued", len(batch), self.directory)
                pending.extendleft(reversed(batch))  # retried on the next flush
                self._close()
                return 0
            self._size += len(data)
            self.stats["written"] += len(batch)
            self.stats["batches"] += 1
            if self._size >= self.segment_bytes:
                self._close()
                self._segment += 1
            return len(batch)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
            except Exception:  # the writer must not die on one bad batch
                log.exception("record log writer: flush failed")
        self.flush()

    def _open(self) -> int:
        if self._fd is None:
            while True:
                path = self.directory / f"{self.writer_id}-{self._segment:05d}{SUFFIX}"
                if not path.exists():
                    break
                self._segment += 1
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._path = path
            self._size = 0
            if self.fsync == "batch":  # the new file's directory entry must survive a crash too
                dir_fd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None
                self._segment += 1
                if self._path is not None:
                    self._closed.append(self._path)
                    self._path = None
                    self._retain()

    def _retain(self) -> None:
        """Delete this writer's oldest closed segments beyond ``max_bytes`` (never another's)."""
        sizes = []
        for path in self._closed:
            try:
                sizes.append(path.stat().st_size)
            except OSError:
                sizes.append(0)
        total = sum(sizes)
        while self._closed and total > self.max_bytes:
            path = self._closed.popleft()
            total -= sizes.pop(0)
            try:
                path.unlink()
                self.stats["segments_deleted"] += 1
            except OSError:
                pass

    def pending(self) -> int:
        return len(self._pending)

    def summary(self) -> dict:
        return {"directory": str(self.directory), "fsync": self.fsync, "pending": self.pending(), **self.stats}


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def segments(directory: str | os.PathLike) -> list[Path]:
    """Every segment file, oldest first (by modification time, then name)."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.name.endswith(SUFFIX) and p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


#: how much of the newest log a restarted replica reads back (its ledger keeps ~100k answers)
RESTORE_BYTES = 256 * 1024 * 1024


def iter_raw(directory: str | os.PathLike, max_bytes: int | None = None) -> Iterator[dict]:
    """Every intact record of the segments, in file order; torn and corrupt lines skipped. With
    ``max_bytes``, only the newest segments that fit (at least one)."""
    files = segments(directory)
    if max_bytes is not None:
        kept, total = [], 0
        for path in reversed(files):
            total += path.stat().st_size
            if kept and total > max_bytes:
                break
            kept.append(path)
        files = kept[::-1]
    for path in files:
        with open(path, "rb") as f:
            for line in f:
                record = decode(line)
                if record is not None:
                    yield record


def read_records(directory: str | os.PathLike, max_bytes: int | None = None) -> tuple[list[dict], list[dict]]:
    """(answers, feedback) deduplicated: the first answer per request id, the first feedback
    per (request id, kind); ``max_bytes`` as for ``iter_raw``."""
    answers: list[dict] = []
    feedback: list[dict] = []
    seen_answers: set[str] = set()
    seen_feedback: set[tuple[str, str]] = set()
    for record in iter_raw(directory, max_bytes):
        rid = record.get("request_id")
        if not isinstance(rid, str):
            continue
        if record.get("type") == "answer":
            if rid not in seen_answers:
                seen_answers.add(rid)
                answers.append(record)
        elif record.get("type") == "feedback":
            kinds = tuple(k for k in record.get("kinds", ()) if (rid, k) not in seen_feedback)
            if kinds:
                seen_feedback.update((rid, k) for k in kinds)
                feedback.append({**record, "kinds": list(kinds)})
    return answers, feedback
