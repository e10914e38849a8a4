"""The durable spool: accepted requests are fsynced here before the collector answers 2xx.

Layout of the spool folder::

    <seq:020d>.seg     segments of frames (see ``frame``), named by their first record's seq
    checkpoint         JSON ``{"drained_upto": N}``: every record below N is stored in ClickHouse
    quarantine/        sealed segments found corrupt at start, kept for inspection

Writes use group commit: ``append`` queues a frame and returns a future; one writer thread appends
everything queued, calls ``fdatasync`` once, and only then resolves the futures, so a request is answered
only once its bytes are on disk, and the next group fills while a sync runs. Any write or sync error is
fatal: the spool refuses every later append (``SpoolFailed``) and never acknowledges after a failed sync.

Recovery at open truncates a torn tail of the newest segment (bytes that were never acknowledged) and
moves any other corrupt segment to ``quarantine/``, counting it; records are never skipped silently.

A record may carry an in-memory attachment from ``append`` to ``read`` (the receiver attaches the rows it
already encoded from the request, so the drain need not decode it again). Attachments are never written:
after a restart, or once ``max_attachment_bytes`` are held, records come back without one and the reader
derives what it needs from the body.

Sequence numbers start at a random multiple of 2**44 when a spool is created, so a spool folder that is
wiped and re-created, or another collector writing to the same ClickHouse, never reuses the batch
numbers that name deduplication tokens (``pipeline``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

from veil_collector.spool.files import atomic_write, fsync_dir
from veil_collector.spool.frame import (
    HEADER,
    Record,
    decode_record,
    encode_frame,
    encode_payload,
    parse_frame,
    scan,
)

logger = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".seg"
CHECKPOINT = "checkpoint"
QUARANTINE = "quarantine"
_SEQ_PREFIX_SHIFT = 44

SPOOL_RECORDS = Gauge("veil_spool_depth_records", "Spooled requests not yet stored in ClickHouse")
SPOOL_BYTES = Gauge("veil_spool_depth_bytes", "Bytes of spooled requests not yet stored in ClickHouse")
SPOOL_FSYNC = Histogram(
    "veil_spool_commit_seconds",
    "Time to write and fdatasync one commit group",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
SPOOL_GROUP = Histogram(
    "veil_spool_commit_group_records",
    "Requests made durable by one fdatasync",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
SPOOL_QUARANTINED = Counter("veil_spool_quarantined_segments_total", "Corrupt segments moved to quarantine")
SPOOL_TRUNCATED = Counter("veil_spool_truncated_bytes_total", "Bytes of torn tails truncated at recovery")


SPOOL_ATTACHMENTS_DROPPED = Counter(
    "veil_spool_attachments_dropped_total",
    "Records appended without their attachment because max_attachment_bytes were held",
)


class Attachment(Protocol):
    """What a record may carry in memory from ``append`` to ``read``."""

    @property
    def nbytes(self) -> int:
        """Bytes it holds, counted against ``max_attachment_bytes``."""
        ...


class SpoolError(RuntimeError):
    """Base class of the spool's errors."""


class SpoolFull(SpoolError):
    """The spool holds ``max_bytes`` of undrained records; the caller should retry later."""


class SpoolFailed(SpoolError):
    """A write or sync failed; the spool accepts nothing more until the process restarts."""


class SpoolCorrupt(SpoolError):
    """A record read back from a segment failed its CRC after recovery had accepted it."""


@dataclass(slots=True)
class _Segment:
    first_seq: int
    path: Path
    size: int  # bytes that are durable (committed) and valid
    sealed: bool


class Spool:
    """An append-only, fsynced log of accepted requests, drained in order by one reader.

    Args:
        directory: the spool folder (created when missing).
        max_bytes: undrained bytes above which ``append`` raises ``SpoolFull``.
        segment_bytes: a segment is sealed and a new one started once it reaches this size.
        min_free_bytes: ``append`` raises ``SpoolFull`` while the spool's file system has less free space:
            a full disk would otherwise turn into a failed write, which is fatal.
        on_failure: called once, on the writer thread, with the error that made the spool fail (the
            server uses it to exit, so that a supervisor restarts it on a recovered spool).
        max_attachment_bytes: attachments held in memory (appended, not yet read) at most; beyond it a
            record is appended without its attachment.

    ``append`` may be called from any thread; ``read`` and ``checkpoint`` from one reader thread.
    Call ``start`` before appending and ``close`` to stop the writer after it committed what is queued.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int = 64 * 1024 * 1024,
        min_free_bytes: int = 0,
        on_failure: Callable[[BaseException], None] | None = None,
        max_attachment_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        if segment_bytes <= 0 or max_bytes <= 0 or min_free_bytes < 0 or max_attachment_bytes < 0:
            raise ValueError(
                "max_bytes and segment_bytes must be positive, min_free_bytes and max_attachment_bytes "
                "not negative"
            )
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.min_free_bytes = min_free_bytes
        self._on_failure = on_failure
        self.max_attachment_bytes = max_attachment_bytes
        self._attachments: dict[int, Attachment] = {}
        self._attachment_bytes = 0
        self._cv = threading.Condition()
        self._pending: list[tuple[bytes, Future[int]]] = []
        self._segments: list[_Segment] = []
        self._active_fd: int | None = None
        self._failed: BaseException | None = None
        self._closing = False
        self._writer: threading.Thread | None = None
        # Reader state: the segment and offset of the next record to read, and what was read but not
        # checkpointed yet, as (seq, segment first_seq, size).
        self._read_segment: _Segment | None = None
        self._read_offset = 0
        self._unacked: deque[tuple[int, int]] = deque()
        self._recover()

    # ------------------------------------------------------------------ recovery

    def _recover(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / QUARANTINE).mkdir(exist_ok=True)
        checkpoint = self.directory / CHECKPOINT
        paths = sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}"), key=lambda p: int(p.stem))
        if checkpoint.exists():
            self._drained_upto = int(json.loads(checkpoint.read_bytes())["drained_upto"])
        else:
            if paths:
                raise SpoolCorrupt(
                    f"{self.directory} holds segments but no checkpoint file; refusing to guess"
                )
            self._drained_upto = secrets.randbits(63 - _SEQ_PREFIX_SHIFT) << _SEQ_PREFIX_SHIFT
            atomic_write(checkpoint, self._checkpoint_bytes(self._drained_upto))
        next_seq = self._drained_upto
        depth = 0
        for index, path in enumerate(paths):
            newest = index == len(paths) - 1
            data = path.read_bytes()
            result = scan(data)
            if result.corrupt:
                if newest and not result.valid_after_corruption:
                    logger.warning(
                        "spool: truncating a torn tail of %d bytes in %s (never acknowledged)",
                        len(data) - result.valid_end,
                        path.name,
                    )
                    SPOOL_TRUNCATED.inc(len(data) - result.valid_end)
                    with open(path, "r+b") as handle:
                        handle.truncate(result.valid_end)
                        os.fsync(handle.fileno())
                else:
                    self._quarantine(path, f"corrupt record at offset {result.valid_end}")
                    continue
            if not result.records:
                path.unlink()
                fsync_dir(self.directory)
                continue
            last_seq = result.records[-1][0]
            if last_seq < self._drained_upto:
                # Fully drained, but the process died before deleting it.
                path.unlink()
                fsync_dir(self.directory)
                continue
            segment = _Segment(result.records[0][0], path, result.valid_end, sealed=True)
            self._segments.append(segment)
            for seq, offset, size in result.records:
                if seq >= self._drained_upto:
                    if self._read_segment is None:
                        self._read_segment, self._read_offset = segment, offset
                    depth += size
            next_seq = max(next_seq, last_seq + 1)
        self._next_seq = next_seq
        self._depth_bytes = depth
        if self._read_segment is None and self._segments:
            self._read_segment, self._read_offset = self._segments[-1], self._segments[-1].size
        self._publish_depth()
        if self._segments:
            logger.info(
                "spool: recovered %d undrained requests (%d bytes) in %d segments",
                self.depth_records,
                depth,
                len(self._segments),
            )

    def _quarantine(self, path: Path, reason: str) -> None:
        target = self.directory / QUARANTINE / path.name
        shutil.move(path, target)
        fsync_dir(self.directory)
        fsync_dir(target.parent)
        SPOOL_QUARANTINED.inc()
        logger.error("spool: %s in %s; moved the segment to %s", reason, path.name, target)

    @staticmethod
    def _checkpoint_bytes(drained_upto: int) -> bytes:
        return json.dumps({"drained_upto": drained_upto}).encode()

    # ------------------------------------------------------------------ writing

    def start(self) -> None:
        """Start the group-commit writer thread."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._run_writer, name="veil-spool-writer", daemon=True)
            self._writer.start()

    def append(self, project_id: str, body: bytes, attachment: Attachment | None = None) -> Future[int]:
        """Queue one request; the future resolves to its seq once it is durable.

        ``attachment`` comes back with the record from ``read`` in this process (see the module docstring).

        Raises:
            SpoolFull: the undrained bytes would exceed ``max_bytes``.
            SpoolFailed: an earlier write or sync failed, or the spool is closed.
        """
        payload = encode_payload(project_id, body, time.time_ns())
        future: Future[int] = Future()
        # Running futures cannot be cancelled: a client that disconnects (cancelling its awaiting task)
        # must not make the writer's set_result fail; the record is written either way.
        future.set_running_or_notify_cancel()
        with self._cv:
            if self._failed is not None:
                raise SpoolFailed(f"spool write failed earlier: {self._failed}")
            if self._closing or self._writer is None:
                raise SpoolFailed("spool is not running")
            size = HEADER.size + len(payload)
            if self._depth_bytes + size > self.max_bytes:
                raise SpoolFull(
                    f"spool holds {self._depth_bytes} undrained bytes; the cap is {self.max_bytes}"
                )
            if self.min_free_bytes and self.free_disk_bytes() - size < self.min_free_bytes:
                raise SpoolFull(f"less than {self.min_free_bytes} bytes free on the spool's disk")
            seq = self._next_seq
            self._next_seq += 1
            self._depth_bytes += size
            if attachment is not None:
                if self._attachment_bytes + attachment.nbytes <= self.max_attachment_bytes:
                    self._attachments[seq] = attachment
                    self._attachment_bytes += attachment.nbytes
                else:
                    SPOOL_ATTACHMENTS_DROPPED.inc()
            self._pending.append((encode_frame(seq, payload), future))
            self._cv.notify_all()
        self._publish_depth()
        return future

    def _run_writer(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closing:
                    self._cv.wait()
                if not self._pending:
                    return
                group, self._pending = self._pending, []
            started = time.perf_counter()
            try:
                first_seq = HEADER.unpack_from(group[0][0])[3]
                written = self._write_group(first_seq, b"".join(frame for frame, _ in group))
            except Exception as exc:  # an I/O error (or a bug): fatal, never acknowledge what was not synced
                self._fail(exc, group)
                return
            SPOOL_FSYNC.observe(time.perf_counter() - started)
            SPOOL_GROUP.observe(len(group))
            with self._cv:
                self._segments[-1].size += written
                self._cv.notify_all()
            for frame, future in group:
                future.set_result(HEADER.unpack_from(frame)[3])

    def _write_group(self, first_seq: int, data: bytes) -> int:
        if self._active_fd is None or self._segments[-1].size >= self.segment_bytes:
            self._rotate(first_seq)
        fd = self._active_fd
        assert fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fdatasync(fd)
        return len(data)

    def _rotate(self, first_seq: int) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
            self._active_fd = None
        path = self.directory / f"{first_seq:020d}{SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fsync_dir(self.directory)
        with self._cv:
            if self._segments:
                self._segments[-1].sealed = True
            self._segments.append(_Segment(first_seq, path, 0, sealed=False))
            if self._read_segment is None:
                self._read_segment, self._read_offset = self._segments[-1], 0
        self._active_fd = fd

    def _fail(self, exc: BaseException, group: list[tuple[bytes, Future[int]]]) -> None:
        logger.critical("spool: write or fdatasync failed, refusing all further requests: %s", exc)
        with self._cv:
            self._failed = exc
            group = group + self._pending
            self._pending = []
            self._cv.notify_all()
        for _, future in group:
            future.set_exception(SpoolFailed(f"spool write failed: {exc}"))
        if self._on_failure is not None:
            self._on_failure(exc)

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the active segment."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._writer is not None:
            self._writer.join()
        if self._active_fd is not None:
            os.close(self._active_fd)
            self._active_fd = None
        with self._cv:
            if self._segments:
                self._segments[-1].sealed = True

    # ------------------------------------------------------------------ reading

    def read(self, *, max_records: int, max_bytes: int, timeout: float) -> list[Record]:
        """The next durable records in seq order, waiting up to ``timeout`` seconds for the first.

        Returns at least one record unless the timeout passes, and stops before ``max_records`` or
        once ``max_bytes`` are read. Records are not drained until ``checkpoint`` says so.

        Raises:
            SpoolCorrupt: a record no longer matches its CRC.
        """
        deadline = time.monotonic() + timeout
        with self._cv:
            while not self._available() and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cv.wait(left)
        records: list[Record] = []
        total = 0
        for segment, end in self._readable():
            with open(segment.path, "rb") as handle:
                fd = handle.fileno()
                while self._read_offset < end and len(records) < max_records and total < max_bytes:
                    record = self._read_record(fd, segment)
                    records.append(record)
                    total += record.size
            if len(records) >= max_records or total >= max_bytes:
                break
        return records

    def _available(self) -> bool:
        segment = self._read_segment
        if segment is None:
            return False
        return self._read_offset < segment.size or self._segments[-1] is not segment

    def _readable(self) -> Iterator[tuple[_Segment, int]]:
        """Yield the reader's segment and each later one, with its durable end, moving the cursor.

        A segment is left only when it is sealed and read to its end; size and seal are read together
        under the lock because the writer seals a segment only after its last group is counted.
        """
        while True:
            with self._cv:
                segment = self._read_segment
                if segment is None:
                    return
                end = segment.size
                if self._read_offset >= end:
                    following = next((s for s in self._segments if s.first_seq > segment.first_seq), None)
                    if not segment.sealed or following is None:
                        return
                    self._read_segment, self._read_offset = following, 0
                    continue
            yield segment, end
            if self._read_offset < end:
                return  # stopped by a limit

    def _read_record(self, fd: int, segment: _Segment) -> Record:
        header = os.pread(fd, HEADER.size, self._read_offset)
        length = HEADER.unpack_from(header)[1] if len(header) == HEADER.size else 0
        data = header + os.pread(fd, length, self._read_offset + HEADER.size)
        frame = parse_frame(data, 0)
        if frame is None:
            raise SpoolCorrupt(f"record at offset {self._read_offset} of {segment.path} fails its CRC")
        seq, payload, size = frame
        self._read_offset += size
        self._unacked.append((seq, size))
        with self._cv:
            attachment = self._attachments.pop(seq, None)
            if attachment is not None:
                self._attachment_bytes -= attachment.nbytes
        return decode_record(seq, bytes(payload), attachment)

    def checkpoint(self, upto_seq: int) -> None:
        """Record durably that every record below ``upto_seq`` is stored; delete drained segments."""
        atomic_write(self.directory / CHECKPOINT, self._checkpoint_bytes(upto_seq))
        drained = 0
        while self._unacked and self._unacked[0][0] < upto_seq:
            drained += self._unacked.popleft()[1]
        with self._cv:
            self._drained_upto = upto_seq
            self._depth_bytes -= drained
            removable = [
                s
                for s, following in zip(self._segments, self._segments[1:], strict=False)
                if s.sealed and following.first_seq <= upto_seq and s is not self._read_segment
            ]
            self._segments = [s for s in self._segments if s not in removable]
        for segment in removable:
            segment.path.unlink()
        if removable:
            fsync_dir(self.directory)
        self._publish_depth()

    # ------------------------------------------------------------------ state

    @property
    def drained_upto(self) -> int:
        """Every record with a lower seq is stored in ClickHouse."""
        return self._drained_upto

    @property
    def depth_records(self) -> int:
        """Requests accepted but not yet drained."""
        return self._next_seq - self._drained_upto

    @property
    def depth_bytes(self) -> int:
        """Bytes of requests accepted but not yet drained (frames, as on disk)."""
        return self._depth_bytes

    @property
    def full(self) -> bool:
        """At or above 90 % of the cap, or below the free-disk floor: readiness reports it."""
        if self._depth_bytes >= 0.9 * self.max_bytes:
            return True
        return bool(self.min_free_bytes) and self.free_disk_bytes() < self.min_free_bytes

    def free_disk_bytes(self) -> int:
        """Free bytes on the spool's file system, for unprivileged processes."""
        return shutil.disk_usage(self.directory).free

    @property
    def failed(self) -> BaseException | None:
        """The write or sync error that stopped the spool, if any."""
        return self._failed

    def _publish_depth(self) -> None:
        SPOOL_RECORDS.set(self.depth_records)
        SPOOL_BYTES.set(self._depth_bytes)
