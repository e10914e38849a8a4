"""The durable spool: framing, group commit, cap, recovery of torn tails and corrupt segments."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from veil_collector.spool import Spool, SpoolFailed, SpoolFull
from veil_collector.spool.frame import HEADER
from veil_collector.spool.spool import QUARANTINE, SPOOL_QUARANTINED

MIB = 1024 * 1024


def open_spool(path: Path, **kwargs) -> Spool:
    spool = Spool(path, max_bytes=kwargs.pop("max_bytes", 64 * MIB), **kwargs)
    spool.start()
    return spool


def append_all(spool: Spool, bodies: list[bytes], project: str = "p") -> list[int]:
    return [spool.append(project, body).result(timeout=10) for body in bodies]


def read_all(spool: Spool) -> list[tuple[int, bytes]]:
    out = []
    while records := spool.read(max_records=1000, max_bytes=64 * MIB, timeout=0.05):
        out.extend((record.seq, record.body) for record in records)
    return out


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("*.seg"))


def test_records_round_trip_and_survive_a_restart(tmp_path):
    spool = open_spool(tmp_path)
    seqs = append_all(spool, [b"one", b"two", b"three"])
    first = spool.read(max_records=1, max_bytes=MIB, timeout=1)
    spool.checkpoint(first[0].seq + 1)
    spool.close()

    reopened = open_spool(tmp_path)

    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
    assert first[0].project_id == "p" and first[0].body == b"one"
    assert read_all(reopened) == [(seqs[1], b"two"), (seqs[2], b"three")]
    assert reopened.depth_records == 2
    assert append_all(reopened, [b"four"]) == [seqs[2] + 1]
    reopened.close()


def test_a_new_spool_starts_at_a_random_sequence_prefix(tmp_path):
    first = open_spool(tmp_path / "a")
    second = open_spool(tmp_path / "b")
    seqs = append_all(first, [b"x"]) + append_all(second, [b"x"])
    first.close()
    second.close()
    assert seqs[0] != seqs[1]
    assert all(seq % (1 << 44) == 0 for seq in seqs)


def test_group_commit_makes_many_requests_durable_with_one_fdatasync(tmp_path, monkeypatch):
    real_fdatasync = os.fdatasync
    syncs: list[int] = []

    def slow_fdatasync(fd: int) -> None:
        syncs.append(fd)
        time.sleep(0.02)  # a slow disk: requests queue up behind the running sync
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    spool = open_spool(tmp_path)
    with ThreadPoolExecutor(max_workers=32) as pool:
        seqs = list(pool.map(lambda i: spool.append("p", b"%d" % i).result(timeout=10), range(200)))
    spool.close()

    assert sorted(seqs) == list(range(seqs and min(seqs), min(seqs) + 200))
    assert len(syncs) < 100
    assert len(read_all(open_spool(tmp_path))) == 200


def test_no_acknowledgement_before_the_sync_completes(tmp_path, monkeypatch):
    release = threading.Event()
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (release.wait(10), real_fdatasync(fd)))
    spool = open_spool(tmp_path)

    future = spool.append("p", b"body")
    time.sleep(0.1)
    acknowledged_early = future.done()
    release.set()

    assert not acknowledged_early
    assert future.result(timeout=10) >= 0
    spool.close()


def test_a_failed_sync_is_fatal(tmp_path, monkeypatch):
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    failures: list[BaseException] = []
    spool = open_spool(tmp_path, on_failure=failures.append)
    monkeypatch.setattr(os, "fdatasync", broken)
    future = spool.append("p", b"body")

    with pytest.raises(SpoolFailed):
        future.result(timeout=10)
    with pytest.raises(SpoolFailed):
        spool.append("p", b"again")
    assert spool.failed is not None
    assert [str(error) for error in failures] == ["[Errno 5] Input/output error"]


def test_the_cap_refuses_appends_until_records_are_drained(tmp_path):
    spool = open_spool(tmp_path, max_bytes=MIB, segment_bytes=256 * 1024)
    body = b"x" * (320 * 1024)
    append_all(spool, [body, body, body])

    with pytest.raises(SpoolFull):
        spool.append("p", body)
    assert spool.full

    records = spool.read(max_records=2, max_bytes=64 * MIB, timeout=1)
    spool.checkpoint(records[-1].seq + 1)
    append_all(spool, [body])
    assert spool.depth_records == 2
    spool.close()


def test_drained_segments_are_deleted(tmp_path):
    spool = open_spool(tmp_path, segment_bytes=64 * 1024)
    for _ in range(6):
        append_all(spool, [b"y" * 40 * 1024])
    assert len(segments(tmp_path)) >= 3

    records = read_all(spool)
    spool.checkpoint(records[-1][0] + 1)

    assert len(segments(tmp_path)) == 1  # the active one
    assert spool.depth_bytes == 0 and spool.depth_records == 0
    spool.close()


def test_a_torn_tail_is_truncated_and_appends_continue(tmp_path):
    spool = open_spool(tmp_path)
    seqs = append_all(spool, [b"a" * 100, b"b" * 100])
    spool.close()
    newest = segments(tmp_path)[-1]
    size = newest.stat().st_size
    with open(newest, "ab") as handle:  # the writer died half-way through a frame
        handle.write(HEADER.pack(b"VSP1", 100, 0, seqs[-1] + 1) + b"c" * 30)

    reopened = open_spool(tmp_path)
    after = append_all(reopened, [b"d"])

    assert newest.stat().st_size == size
    assert after == [seqs[-1] + 1]
    assert [body for _, body in read_all(reopened)] == [b"a" * 100, b"b" * 100, b"d"]
    reopened.close()


def test_a_bad_crc_at_the_tail_is_truncated(tmp_path):
    spool = open_spool(tmp_path)
    append_all(spool, [b"first", b"second"])
    spool.close()
    newest = segments(tmp_path)[-1]
    data = bytearray(newest.read_bytes())
    data[-1] ^= 0xFF
    newest.write_bytes(bytes(data))

    reopened = open_spool(tmp_path)

    assert [body for _, body in read_all(reopened)] == [b"first"]
    reopened.close()


def test_corruption_in_a_sealed_segment_quarantines_it(tmp_path):
    spool = open_spool(tmp_path, segment_bytes=64 * 1024)
    append_all(spool, [b"s" * 70 * 1024])  # fills the first segment
    append_all(spool, [b"t" * 10])  # starts the second
    spool.close()
    sealed = segments(tmp_path)[0]
    data = bytearray(sealed.read_bytes())
    data[HEADER.size + 10] ^= 0xFF
    sealed.write_bytes(bytes(data))
    before = SPOOL_QUARANTINED._value.get()

    reopened = open_spool(tmp_path)

    assert (tmp_path / QUARANTINE / sealed.name).exists()
    assert SPOOL_QUARANTINED._value.get() == before + 1
    assert [body for _, body in read_all(reopened)] == [b"t" * 10]
    reopened.close()


def test_corruption_followed_by_valid_records_is_not_mistaken_for_a_torn_tail(tmp_path):
    spool = open_spool(tmp_path)
    append_all(spool, [b"one", b"two", b"three"])
    spool.close()
    newest = segments(tmp_path)[-1]
    data = bytearray(newest.read_bytes())
    data[HEADER.size] ^= 0xFF  # corrupt the first record, keep the two after it
    newest.write_bytes(bytes(data))

    reopened = open_spool(tmp_path)

    assert (tmp_path / QUARANTINE / newest.name).exists()
    assert read_all(reopened) == []
    reopened.close()


def test_segments_without_a_checkpoint_are_refused(tmp_path):
    spool = open_spool(tmp_path)
    append_all(spool, [b"x"])
    spool.close()
    (tmp_path / "checkpoint").unlink()

    with pytest.raises(Exception, match="no checkpoint"):
        Spool(tmp_path, max_bytes=MIB)


def test_appends_are_refused_below_the_free_disk_floor(tmp_path):
    spool = open_spool(tmp_path, min_free_bytes=1 << 62)  # more than any disk has

    with pytest.raises(SpoolFull, match="free on the spool's disk"):
        spool.append("p", b"x")
    assert spool.full
    spool.close()


def test_a_cancelled_waiter_does_not_stop_the_writer(tmp_path):
    spool = open_spool(tmp_path)
    future = spool.append("p", b"first")
    future.cancel()  # what asyncio does when the client disconnects while the handler awaits

    assert append_all(spool, [b"second"])[0] == future.result(timeout=10) + 1
    spool.close()


class Rows:
    """An attachment of a given size."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


def test_attachments_come_back_with_their_records_within_the_cap_and_not_after_a_restart(tmp_path):
    spool = open_spool(tmp_path, max_attachment_bytes=250)
    attached = [Rows(100), Rows(100), Rows(100)]
    for body, attachment in zip([b"a", b"b", b"c"], attached, strict=True):
        spool.append("p", body, attachment).result(timeout=10)
    spool.append("p", b"d").result(timeout=10)

    first = spool.read(max_records=10, max_bytes=MIB, timeout=1)
    # Reading hands the attachments over: the cap has room again.
    spool.append("p", b"e", Rows(250)).result(timeout=10)
    second = spool.read(max_records=10, max_bytes=MIB, timeout=1)
    spool.close()
    reopened = open_spool(tmp_path)
    replayed = reopened.read(max_records=10, max_bytes=MIB, timeout=1)
    reopened.close()

    assert [record.attachment for record in first] == [attached[0], attached[1], None, None]
    assert [record.attachment.nbytes for record in second] == [250]
    assert [record.body for record in replayed] == [b"a", b"b", b"c", b"d", b"e"]
    assert all(record.attachment is None for record in replayed)
