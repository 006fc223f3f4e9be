"""Ogg Opus streams built page by page, with the CRCs real muxers write:
a long stream of tiny pages, or one packet that never ends."""

from __future__ import annotations

import struct

import numpy as np

MB = 1 << 20


def _crc_table() -> np.ndarray:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return np.array(table, dtype=np.uint32)


CRC = _crc_table()
SERIAL = 0x5EED


def ogg_pages(
    sequence: np.ndarray, granule: np.ndarray, flags: int, lacing: list[int], body: bytes
) -> bytes:
    """One Ogg page per ``sequence`` number, all with the same lacing and body,
    with their CRCs (computed for all pages at once)."""
    count = len(sequence)
    header = np.zeros((count, 27 + len(lacing)), np.uint8)
    header[:, 0:4] = np.frombuffer(b"OggS", np.uint8)
    header[:, 5] = flags
    header[:, 6:14] = granule.astype("<i8").view(np.uint8).reshape(count, 8)
    header[:, 14:18] = np.frombuffer(struct.pack("<I", SERIAL), np.uint8)
    header[:, 18:22] = sequence.astype("<u4").view(np.uint8).reshape(count, 4)
    header[:, 26] = len(lacing)
    header[:, 27:] = np.array(lacing, np.uint8)
    pages = np.concatenate([header, np.tile(np.frombuffer(body, np.uint8), (count, 1))], axis=1)
    crc = np.zeros(count, dtype=np.uint32)
    for column in pages.T:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ CRC[((crc >> 24) & 0xFF) ^ column]
    pages[:, 22:26] = crc.astype("<u4").view(np.uint8).reshape(count, 4)
    return pages.tobytes()


OPUS_HEAD = b"OpusHead" + bytes([1, 1]) + struct.pack("<HIhB", 312, 48000, 0, 0)
OPUS_TAGS = b"OpusTags" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0)


def opus_headers() -> bytes:
    one = np.array([0])
    return ogg_pages(one, one, 2, [len(OPUS_HEAD)], OPUS_HEAD) + ogg_pages(
        one + 1, one, 0, [len(OPUS_TAGS)], OPUS_TAGS
    )


def ogg_tiny_pages(count: int) -> bytes:
    """``count`` pages of one 1-byte Opus packet each (a 20 ms silent frame)."""
    sequence = np.arange(2, count + 2)
    return opus_headers() + ogg_pages(sequence, (sequence - 1) * 960, 0, [1], b"\xf8")


def ogg_one_long_packet(megabytes: int) -> bytes:
    """One Opus packet continued over ``megabytes`` of full pages (never ended)."""
    count = megabytes * MB // (255 * 255)
    first = ogg_pages(np.array([2]), np.array([-1]), 0, [255] * 255, b"\xf8" + bytes(255 * 255 - 1))
    rest = ogg_pages(
        np.arange(3, count + 2), np.full(count - 1, -1), 1, [255] * 255, bytes(255 * 255)
    )
    return opus_headers() + first + rest
