"""The spool's on-disk record format.

A frame is ``magic (4) | len u32 | crc32 u32 | seq u64 | payload`` (little endian); the CRC covers the
``seq`` bytes and the payload, so a frame copied to the wrong place or torn half-way is detected. The
payload is one accepted request: ``received_unix_ns u64 | encoding u8 | len(project) u16 | project |
body``, where ``body`` is the validated, fast-scrubbed ``ExportTraceServiceRequest`` in ``encoding``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

MAGIC = b"VSP1"
HEADER = struct.Struct("<4sIIQ")
_SEQ = struct.Struct("<Q")
_PAYLOAD_HEAD = struct.Struct("<QBH")
MAX_PAYLOAD = 0xFFFF_FFFF

ENCODING_PROTOBUF = 1


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled request.

    Attributes:
        seq: position in the spool; consecutive records have consecutive numbers.
        project_id: the project the request was authenticated for.
        body: the ``ExportTraceServiceRequest`` bytes (``encoding`` says which encoding).
        received_unix_ns: when the collector accepted the request.
        size: bytes the record occupies on disk, header included.
        encoding: ``ENCODING_PROTOBUF`` (the only encoding written today).
        attachment: what the appending process attached to the record in memory (``Spool.append``);
            never on disk, so None for a record read back after a restart.
    """

    seq: int
    project_id: str
    body: bytes
    received_unix_ns: int
    size: int
    encoding: int = ENCODING_PROTOBUF
    attachment: Any = None


def encode_payload(project_id: str, body: bytes, received_unix_ns: int) -> bytes:
    project = project_id.encode("utf-8")
    if len(project) > 0xFFFF:
        raise ValueError("project id longer than 65535 bytes")
    return _PAYLOAD_HEAD.pack(received_unix_ns, ENCODING_PROTOBUF, len(project)) + project + body


def encode_frame(seq: int, payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"spool record of {len(payload)} bytes exceeds the 4 GiB frame limit")
    crc = zlib.crc32(payload, zlib.crc32(_SEQ.pack(seq)))
    return HEADER.pack(MAGIC, len(payload), crc, seq) + payload


def decode_record(seq: int, payload: bytes, attachment: Any = None) -> Record:
    received, encoding, project_len = _PAYLOAD_HEAD.unpack_from(payload)
    start = _PAYLOAD_HEAD.size
    project = payload[start : start + project_len].decode("utf-8")
    body = payload[start + project_len :]
    return Record(
        seq=seq,
        project_id=project,
        body=body,
        received_unix_ns=received,
        size=HEADER.size + len(payload),
        encoding=encoding,
        attachment=attachment,
    )


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What scanning one segment found.

    Attributes:
        records: ``(seq, offset, frame size)`` of every valid frame, in order.
        valid_end: the offset just after the last valid frame.
        corrupt: a frame at ``valid_end`` is incomplete or fails its CRC.
        valid_after_corruption: a valid frame follows the corruption (so it is not a torn tail).
    """

    records: list[tuple[int, int, int]]
    valid_end: int
    corrupt: bool
    valid_after_corruption: bool


def parse_frame(data: bytes | memoryview, offset: int) -> tuple[int, memoryview | bytes, int] | None:
    """The ``(seq, payload, frame size)`` at ``offset``, or None when the frame there is torn or bad."""
    if offset + HEADER.size > len(data):
        return None
    magic, length, crc, seq = HEADER.unpack_from(data, offset)
    end = offset + HEADER.size + length
    if magic != MAGIC or end > len(data):
        return None
    payload = data[offset + HEADER.size : end]
    if zlib.crc32(payload, zlib.crc32(_SEQ.pack(seq))) != crc:
        return None
    return seq, payload, end - offset


def scan(data: bytes) -> ScanResult:
    """Walk every frame of one segment's bytes, stopping at the first bad one."""
    view = memoryview(data)
    records: list[tuple[int, int, int]] = []
    offset = 0
    while offset < len(data):
        frame = parse_frame(view, offset)
        if frame is None:
            return ScanResult(records, offset, True, _valid_frame_after(view, offset + 1))
        seq, _, size = frame
        records.append((seq, offset, size))
        offset += size
    return ScanResult(records, offset, False, False)


def _valid_frame_after(view: memoryview, start: int) -> bool:
    data = view.obj if isinstance(view.obj, bytes) else bytes(view)
    position = data.find(MAGIC, start)
    while position != -1:
        if parse_frame(view, position) is not None:
            return True
        position = data.find(MAGIC, position + 1)
    return False
