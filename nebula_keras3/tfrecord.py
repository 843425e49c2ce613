"""TFRecord framing with the standard library (TensorBoard event files, TF Serving warmup files).

A record is ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``,
little-endian, with ``masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`` mod 2**32
(``tensorflow/core/lib/hash/crc32c.h`` Mask). Readers check both CRCs, as TF's
SequentialRecordReader does.

Imports nothing beyond the standard library.
"""

from __future__ import annotations

import struct


class TFRecordError(ValueError):
    """A TFRecord file that is truncated or fails a CRC check (message says where)."""


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli)."""
    crc, table = 0xFFFFFFFF, _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record: ``data`` with its length and both CRCs."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def scan_records(raw: bytes, source: str = "<tfrecord>") -> tuple[list[tuple[int, int, bytes]], str | None]:
    """``([(start, end, data)], problem)``: the complete records of a TFRecord file's bytes, in
    order, up to the first truncated or corrupt one (``problem`` names ``source`` and the byte;
    None when there is none)."""
    records, pos = [], 0
    while pos < len(raw):
        if pos + 12 > len(raw):
            return records, f"{source}: truncated record header at byte {pos}"
        length_bytes = raw[pos:pos + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        (crc,) = struct.unpack_from("<I", raw, pos + 8)
        if crc != masked_crc(length_bytes):
            return records, f"{source}: record length CRC mismatch at byte {pos}"
        if pos + 16 + length > len(raw):
            return records, f"{source}: truncated record at byte {pos}"
        data = raw[pos + 12:pos + 12 + length]
        (crc,) = struct.unpack_from("<I", raw, pos + 12 + length)
        if crc != masked_crc(data):
            return records, f"{source}: record data CRC mismatch at byte {pos}"
        records.append((pos, pos + 16 + length, data))
        pos += 16 + length
    return records, None


def read_records(raw: bytes, source: str = "<tfrecord>") -> list[bytes]:
    """The records of a TFRecord file's bytes, CRCs checked; TFRecordError names ``source`` and the byte."""
    records, problem = scan_records(raw, source)
    if problem:
        raise TFRecordError(problem)
    return [data for _, _, data in records]
