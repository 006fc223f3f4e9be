"""What an upload must pass before and while FFmpeg parses it.

Uploads are hostile input. FFmpeg is therefore only allowed the demuxers in
``_DEMUXERS``: playlist and reference formats (hls, concat, dash, image
sequences...) can make FFmpeg open other files or URLs, and none of them is a
way to upload audio. The demuxer FFmpeg picks must also agree with the file's
first bytes (``_SIGNATURES``): FFmpeg finds MP3 or AAC frames anywhere in a
file, so a web page, image or archive with audio appended would otherwise pass
as audio. ``open_container`` applies both; every read of a file goes through it.

FFmpeg's header parsers walk structures of any count, and some load what they
find into memory whole. ID3v2 ``PRIV`` frames are the worst: FFmpeg escapes
them byte by byte into a metadata string, and it parses ID3 tags at the start
of a file, in WAV chunks and between ADTS frames. ``check_id3`` refuses such
tags before FFmpeg sees the file. MP4 is the other format whose headers FFmpeg
loads whole: ``check_boxes`` refuses sample tables and compressed headers that
would cost it hundreds of megabytes, and box chains that are damaged or made
of millions of boxes.
"""

from __future__ import annotations

import os
import re
import zlib
from typing import Any

import av
import av.error

from app.audio.errors import AV_ERRORS, AudioError, broken, unsupported
from app.audio.limits import MB, Deadline

# Demuxers FFmpeg may pick for an upload: audio formats, plus the common video
# containers so the soundtrack of a video can be separated. FFmpeg still
# probes every format, then refuses with EINVAL when the winner is not listed.
_DEMUXERS = ",".join(
    (
        "wav", "w64", "aiff", "caf", "au", "voc", "mp3", "mp2", "flac", "ogg", "mov",
        "matroska", "aac", "loas", "ac3", "eac3", "dts", "dtshd", "truehd", "mlp", "asf",
        "xwma", "wv", "ape", "tta", "tak", "shn", "mpc", "mpc8", "dsf", "amr", "oma", "rm",
        "avi", "flv", "mpeg", "mpegts", "nut", "iff",
    )
)  # fmt: skip
_OPEN_OPTIONS = {"format_whitelist": _DEMUXERS, "protocol_whitelist": "file"}
# FFmpeg's mov demuxer picks a file for a known box anywhere in its first
# kilobytes, then parses every box from the start, whatever the first one is:
# a file that does not start like MP4 (and so would be refused after the open)
# is not offered to it, so ``check_boxes`` sees every file it parses.
_OPEN_OPTIONS_NO_MOV = {
    "format_whitelist": ",".join(d for d in _DEMUXERS.split(",") if d != "mov"),
    "protocol_whitelist": "file",
}
# FFmpeg's wav demuxer re-probes 16-bit PCM for a bitstream carried in it (AC-3
# or DTS over S/PDIF, MP3): it runs every demuxer's probe over buffers doubling
# up to 1 MB, 45 ms per WAV upload of any length. Such a bitstream starts with
# the samples, so the first 32 KB find it as well (1.6 ms).
_WAV_PROBESIZE = "32768"

# ID3v2 data FFmpeg is slow or greedy with, in bytes over all tags: PRIV frames
# (escaped byte by byte into a metadata string: about 0.15 us and 12 bytes of
# memory per byte) and compressed frames (inflated into memory, 1000:1 at
# best). Real PRIV frames are identifiers and small XMP packets, kilobytes at
# most, and compressed frames are all but extinct. And frames and tags in a
# file: real files have tens of frames; millions keep FFmpeg busy for seconds.
_ID3_MAX_COSTLY_BYTES = 1 * 1024 * 1024
_ID3_MAX_FRAMES = 10_000
_ID3_MAX_TAGS = 1000  # ADTS streams cut from HLS carry one per segment
# MP4/MOV (ISO-BMFF) boxes other than media data and padding: FFmpeg parses
# them into memory at open (moov: the sample tables, 2-3x their size: a 31 MB
# sample table took 75-100 MB, a 160 MB one 350 MB) or while reading (moof,
# fragments). Real files are far below: a one-hour 44.1 kHz stereo AAC m4a
# has a 0.6 MB moov; the moof boxes of a 20-minute file fragmented at every
# frame total 5.6 MB; a three-hour 60 fps video track's tables are about
# 10 MB (12-16 bytes a frame); cover art in the moov is a few MB at most. A
# compressed moov (cmov) counts at its inflated size (a 0.5 MB upload
# inflated to 500 MB: 2 s and 1.1 GB in FFmpeg).
_MP4_MAX_HEADER_BYTES = 32 * 1024 * 1024
# Top-level boxes in a file. Unfragmented files have under ten; a 20-minute
# AAC file fragmented at every frame (low-latency streaming, ffmpeg's
# frag_every_frame) 103,000, the most a real file has. 200 MB of empty boxes
# are 26 million, about 1 us each in FFmpeg and 2.5 us in the walk (which
# also stops at the probe's deadline).
_MP4_MAX_BOXES = 250_000
_MP4_MAX_CMOV = 8  # compressed headers, nested ones included; files have one


# --------------------------------------------------------------------------- opening


def _looks_like_media(path: str) -> bool:
    """Whether a file FFmpeg could not open starts like a media file.

    Tells a damaged upload (422: it is audio, but broken) from something that
    was never audio (415), so the client gets the error it can act on.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    if len(head) < 4:
        return False
    if head[:4] in (b"RIFF", b"RF64", b"FORM", b"fLaC", b"OggS", b"caff", b"wvpk", b"MAC "):
        return True
    if head[:3] == b"ID3" or head[:4] == b"\x1a\x45\xdf\xa3":  # ID3 tag, Matroska/WebM
        return True
    if head[4:8] == b"ftyp":  # ISO media (mp4, m4a, mov), unless an image brand
        return head[8:12] not in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis")
    # MPEG audio / ADTS frame sync with a valid layer and sample-rate index.
    b0, b1, b2 = head[0], head[1], head[2]
    return b0 == 0xFF and (b1 & 0xE0) == 0xE0 and (b1 & 0x06) != 0 and (b2 & 0x0C) != 0x0C


def open_container(path: str, deadline: Deadline | None = None) -> av.container.InputContainer:
    """Open an upload with the allowed demuxers; with ``deadline``, FFmpeg's
    reads are interrupted when it passes (PyAV's open and read timeouts)."""
    try:
        head, stripped = _leading_bytes(path)
    except OSError as exc:
        raise broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc
    options = _OPEN_OPTIONS if _SIGNATURES["mov"](head) else _OPEN_OPTIONS_NO_MOV
    if _SIGNATURES["wav"](head):
        options = {**options, "probesize": _WAV_PROBESIZE}
    timeout = None if deadline is None else deadline.remaining()
    try:
        container = av.open(path, "r", container_options=options, timeout=timeout)
    except (av.error.InvalidDataError, av.error.ArgumentError, EOFError) as exc:
        if deadline is not None:
            deadline.check()  # interrupted: say why, not "damaged"
        # FFmpeg recognised no allowed format, or the header is cut short.
        if _looks_like_media(path):
            raise broken("The audio file is damaged or truncated.") from exc
        raise unsupported() from exc
    except AV_ERRORS as exc:
        if deadline is not None:
            deadline.check()
        raise broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc
    try:
        if deadline is not None:
            deadline.check()  # an interrupted parse may still "succeed" with half a header
        _check_signature(head, stripped, container.format.name.split(",")[0])
    except BaseException:
        container.close()
        raise
    return container


# --------------------------------------------------------------------------- signatures


def _mpeg_audio(h: bytes) -> bool:
    """An MPEG audio frame header: sync, a valid layer, bitrate and rate index."""
    return (
        len(h) >= 3
        and h[0] == 0xFF
        and (h[1] & 0xE0) == 0xE0
        and (h[1] & 0x06) != 0
        and (h[2] & 0xF0) != 0xF0
        and (h[2] & 0x0C) != 0x0C
    )


def _prefix(*magics: bytes) -> Any:
    return lambda h: h.startswith(magics)


def _riff(*kinds: bytes) -> Any:
    return lambda h: h[:4] in (b"RIFF", b"RF64", b"BW64") and h[8:12] in kinds


# What the first bytes of a file (after any ID3v2 tags) must be for the demuxer
# FFmpeg picked. Keyed by FFmpeg's demuxer name; a demuxer missing here is refused.
_SIGNATURES: dict[str, Any] = {
    "wav": _riff(b"WAVE"),
    "xwma": _riff(b"XWMA"),
    "avi": _riff(b"AVI "),
    "w64": _prefix(b"riff"),
    "aiff": lambda h: h[:4] == b"FORM" and h[8:12] in (b"AIFF", b"AIFC"),
    "iff": _prefix(b"FORM"),
    "caf": _prefix(b"caff"),
    "au": _prefix(b".snd"),
    "voc": _prefix(b"Creative Voice File"),
    "flac": _prefix(b"fLaC"),
    "ogg": _prefix(b"OggS"),
    "mov": lambda h: h[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"),
    "matroska": _prefix(b"\x1a\x45\xdf\xa3"),
    "asf": _prefix(bytes.fromhex("3026b2758e66cf11")),
    "wv": _prefix(b"wvpk"),
    "ape": _prefix(b"MAC "),
    "tta": _prefix(b"TTA1", b"TTA2"),
    "tak": _prefix(b"tBaK"),
    "shn": _prefix(b"ajkg"),
    "mpc": _prefix(b"MP+"),
    "mpc8": _prefix(b"MPCK"),
    "dsf": _prefix(b"DSD "),
    "amr": _prefix(b"#!AMR"),
    "oma": _prefix(b"ea3", b"EA3"),
    "rm": _prefix(b".RMF", b".ra\xfd"),
    "flv": _prefix(b"FLV"),
    "nut": _prefix(b"nut/multimedia container"),
    "mpeg": lambda h: h[:3] == b"\x00\x00\x01" and len(h) > 3 and h[3] >= 0xBA,
    "mpegts": lambda h: (
        (len(h) > 188 and h[0] == h[188] == 0x47) or (len(h) > 196 and h[4] == h[196] == 0x47)
    ),
    "dtshd": _prefix(b"DTSHDHDR"),
}
# Raw streams of frames have no file header, only each frame's sync word; an
# encoder may pad the start with zero bytes, which are skipped for these.
_SYNC_SIGNATURES: dict[str, Any] = {
    "mp3": _mpeg_audio,
    "mp2": _mpeg_audio,
    # ADTS (sync 0xFFF, layer 0) or ADIF.
    "aac": lambda h: (len(h) > 1 and h[0] == 0xFF and (h[1] & 0xF6) == 0xF0) or h[:4] == b"ADIF",
    "loas": lambda h: len(h) > 1 and h[0] == 0x56 and (h[1] & 0xE0) == 0xE0,
    "ac3": _prefix(b"\x0b\x77", b"\x77\x0b"),
    "eac3": _prefix(b"\x0b\x77", b"\x77\x0b"),
    "dts": _prefix(*(bytes.fromhex(h) for h in ("7ffe8001", "fe7f0180", "1fffe800", "ff1f00e8"))),
    "truehd": lambda h: h[4:7] == b"\xf8\x72\x6f",
    "mlp": lambda h: h[4:7] == b"\xf8\x72\x6f",
}
_HEAD_BYTES = 256
_MAX_ZERO_PADDING = 64 * 1024
_MAX_ID3_TAGS = 8  # files carry one, rarely two; a chain of them is not audio


def _after_id3(handle: Any) -> int:
    """Where the media starts: past the ID3v2 tags at the start of the file,
    which FFmpeg skips before any demuxer reads (its ff_id3v2_match and
    id3v2_parse: a footer only in v2.4)."""
    offset = 0
    for _ in range(_MAX_ID3_TAGS):
        handle.seek(offset)
        tag = handle.read(10)
        if (
            len(tag) < 10
            or tag[:3] != b"ID3"
            or tag[3] == 0xFF
            or tag[4] == 0xFF
            or any(b & 0x80 for b in tag[6:10])
        ):
            break
        size = 0
        for byte in tag[6:10]:  # a "syncsafe" integer: 7 bits per byte
            size = (size << 7) | byte
        footer = 10 if tag[3] == 4 and tag[5] & 0x10 else 0
        offset += 10 + size + footer
    return offset


def _leading_bytes(path: str) -> tuple[bytes, bytes]:
    """The file's first bytes after any ID3v2 tags, as is and past zero padding."""
    with open(path, "rb") as handle:
        offset = _after_id3(handle)
        handle.seek(offset)
        head = handle.read(_HEAD_BYTES)
        start = offset + _zero_run(handle.fileno(), offset, _MAX_ZERO_PADDING)
        handle.seek(start)
        return head, handle.read(_HEAD_BYTES)


# An ID3v2 header as FFmpeg's ff_id3v2_match accepts it, version 2-4 (others
# are skipped): a "syncsafe" size, 7 bits per byte.
_ID3_HEADER = re.compile(rb"ID3[\x02-\x04][\x00-\xfe][\x00-\xff][\x00-\x7f]{4}")
_ID3_SCAN_BLOCK = 1 << 20
# ID3v2.4 frame flags (FFmpeg applies them to v2.3 frames too).
_ID3_DATALEN, _ID3_ENCRYPTED, _ID3_COMPRESSED = 0x0001, 0x0004, 0x0008


def _syncsafe(raw: bytes) -> int:
    value = 0
    for byte in raw:
        value = (value << 7) | (byte & 0x7F)
    return value


def _syncsafe_of(size: int) -> int:
    """FFmpeg's size_to_syncsafe: a plain 32-bit size read as a syncsafe one."""
    return sum(((size >> (8 * i)) & 0x7F) << (7 * i) for i in range(4))


def _zero_run(fd: int, offset: int, limit: int) -> int:
    """How many zero bytes start at ``offset`` (at most ``limit``)."""
    run = 0
    while run < limit:
        chunk = os.pread(fd, min(1 << 16, limit - run), offset + run)
        if not chunk:
            break
        rest = chunk.lstrip(b"\0")
        run += len(chunk) - len(rest)
        if rest:
            break
    return min(run, limit)


def _id3_frame_id_at(fd: int, offset: int) -> bool:
    """FFmpeg's check_tag: is there a frame id (or padding) at ``offset``?"""
    raw = os.pread(fd, 4, offset)
    return len(raw) == 4 and (raw == b"\0\0\0\0" or re.fullmatch(rb"[A-Z0-9]{4}", raw) is not None)


def _id3_tag(fd: int, start: int, header: bytes, budget: int) -> tuple[int, int]:
    """``(frames, costly bytes)`` of the ID3v2 tag at ``start``, walked as
    FFmpeg's id3v2_parse walks it (at most ``budget`` frames).

    Costly bytes are PRIV frame data and the declared size of compressed
    frames, which FFmpeg inflates into memory.
    """
    version, flags = header[3], header[5]
    if version not in (3, 4):  # v2.2 has neither PRIV nor frame compression
        return 0, 0
    remaining = _syncsafe(header[6:10])
    at = start + 10
    if flags & 0x40:  # extended header
        extended = _syncsafe(os.pread(fd, 4, at)) - (4 if version == 4 else 0)
        if extended < 0:
            return 0, 0
        at += 4 + extended
        remaining -= 4 + extended
    frames = costly = 0
    while remaining >= 10 and frames <= budget:
        raw = os.pread(fd, 10, at)
        if len(raw) < 10:
            break
        if not any(raw[:8]):  # padding: FFmpeg steps through it 10 bytes at a time
            steps = min((_zero_run(fd, at, remaining) - 8) // 10 + 1, remaining // 10)
            at += 10 * steps
            remaining -= 10 * steps
            continue
        frame_id, size, frame_flags = raw[:4], int.from_bytes(raw[4:8], "big"), raw[8] << 8 | raw[9]
        if version == 4 and size > 0x7F:  # syncsafe, unless the writer got it wrong
            if size >= remaining or _id3_frame_id_at(fd, at + 10 + _syncsafe_of(size)):
                size = _syncsafe_of(size)
            elif not _id3_frame_id_at(fd, at + 10 + size):
                break
        if size > 1 << 28:
            break
        remaining -= 10 + size
        if remaining < 0:
            break
        frames += 1
        body, at = at + 10, at + 10 + size
        if size == 0:
            continue
        declared = size
        if frame_flags & _ID3_DATALEN:
            if size < 4:
                break
            declared = int.from_bytes(os.pread(fd, 4, body), "big")
            size -= 4
        if frame_flags & _ID3_ENCRYPTED:
            continue
        if frame_flags & _ID3_COMPRESSED:
            costly += declared
        elif frame_id == b"PRIV":
            costly += size
        elif frame_id[0] == 0:  # padding
            break
    return frames, costly


def check_id3(path: str) -> None:
    """Refuse ID3v2 tags that would cost FFmpeg seconds and gigabytes.

    FFmpeg reads ID3v2 tags at the start of a file, in WAV ``id3 `` chunks and
    between ADTS AAC frames, so the whole file is searched, about 1 ms per MB
    (a chance match in audio data fails the header or frame checks). Tags are
    searched inside tags too, so a fake tag cannot hide a real one.
    """
    advice = "remove its tags (or re-encode it) and upload it again."
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc
    try:
        tags = frames = costly = 0
        offset = 0
        while block := os.pread(fd, _ID3_SCAN_BLOCK, offset):
            position = 0
            while match := _ID3_HEADER.search(block, position):
                position = match.start() + 1  # overlapping headers: a fake one cannot hide another
                tags += 1
                found, cost = _id3_tag(
                    fd, offset + match.start(), match.group(), _ID3_MAX_FRAMES - frames
                )
                frames += found
                costly += cost
                if tags > _ID3_MAX_TAGS or frames > _ID3_MAX_FRAMES:
                    raise broken(
                        f"The file has more than {_ID3_MAX_TAGS} ID3 tags or "
                        f"{_ID3_MAX_FRAMES} ID3 frames; {advice}"
                    )
                if costly > _ID3_MAX_COSTLY_BYTES:
                    raise broken(
                        f"The file's ID3 tags hold {costly / MB:.1f} MB or more of private "
                        f"(PRIV) or compressed data; the limit is "
                        f"{_ID3_MAX_COSTLY_BYTES / MB:g} MB: {advice}"
                    )
            if len(block) < _ID3_SCAN_BLOCK:
                break
            offset += len(block) - 9  # a header across the block boundary is found next time
    except OSError as exc:
        raise broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc
    finally:
        os.close(fd)


# Top-level boxes FFmpeg seeks over: media data and padding. Everything else
# counts as header (moov, moof, trak, meta, uuid, unknown boxes...): FFmpeg's
# parsers are chosen by box type at any depth, even at the top level.
_MP4_MEDIA = (b"mdat", b"free", b"skip", b"wide")
# What FFmpeg's mov_read_cmov inflates, wherever a cmov box is: "dcom" (zlib),
# then "cmvd" with the declared inflated size (allocated at once) and the data.
_CMOV = re.compile(rb"cmov.{4}dcomzlib.{4}cmvd(.{4})", re.DOTALL)
_BOX_WINDOW = 1 << 16


def _box_name(kind: bytes) -> str:
    return kind.decode("ascii", "backslashreplace")


def _cmov_bytes(data: bytes | memoryview, budget: int, found: int = 0) -> tuple[int, int]:
    """``(bytes, count)`` FFmpeg would inflate for the compressed movie headers
    in ``data``, nested ones included (an inflated header is parsed again).
    Stops once past ``budget`` bytes or ``_MP4_MAX_CMOV`` headers."""
    used = 0
    view = memoryview(data)
    for match in _CMOV.finditer(view):
        found += 1
        declared = int.from_bytes(match.group(1), "big")
        used += declared
        if used > budget or found > _MP4_MAX_CMOV:
            break
        if declared == 0:
            continue
        try:
            inflated = zlib.decompressobj().decompress(view[match.end() :], declared)
        except zlib.error:  # FFmpeg fails on it too, after allocating the declared size
            continue
        nested, found = _cmov_bytes(inflated, budget - used, found)
        used += nested
        if used > budget or found > _MP4_MAX_CMOV:
            break
    return used, found


def _header_box(window: bytes, at: int, fd: int, offset: int, size: int) -> bytes | memoryview:
    """The bytes of a header box if it may hold a compressed header, else b""."""
    if at + size <= len(window):
        found = window.find(b"cmov", at, at + size) >= 0
        return memoryview(window)[at : at + size] if found else b""
    body = os.pread(fd, size, offset)
    return body if b"cmov" in body else b""


def _box_error(message: str) -> AudioError:
    return broken(f"The MP4 file {message}; re-encode it and upload it again.")


def _too_much_header(header_bytes: int) -> AudioError:
    return AudioError(
        f"The MP4 file's header boxes (moov and the like) hold {header_bytes / MB:.1f} MB "
        f"or more; the limit is {_MP4_MAX_HEADER_BYTES / MB:g} MB (an hour of AAC needs "
        "under 1 MB): re-encode it and upload it again.",
        code="audio_decode_failed",
        errors={
            "header_mb": round(header_bytes / MB, 1),
            "max_header_mb": round(_MP4_MAX_HEADER_BYTES / MB, 1),
        },
    )


def check_boxes(path: str, deadline: Deadline | None = None) -> None:
    """Refuse an MP4/MOV whose boxes would cost FFmpeg too much memory or time.

    FFmpeg parses the header boxes (``moov``: the sample tables) into memory
    at open, about twice their size, and walks every top-level box. Only
    files that start like MP4 are walked: FFmpeg's mov demuxer is not offered
    the others (``_OPEN_OPTIONS_NO_MOV``). The walk reads the top-level box
    headers (a real file: a few reads) and scans the header boxes for
    compressed ones (at most ``_MP4_MAX_HEADER_BYTES``; a real file: under a
    megabyte). Until a ``moov`` and an ``mdat`` are found (what FFmpeg reads
    at open), the boxes must tile the file: a box smaller than its header or
    past the end of the file is damage or a trap. After them, FFmpeg stops at
    the first box that is not one, and so does the walk: some phones append
    trailers that are not boxes.
    """
    try:
        with open(path, "rb") as handle:
            offset = _after_id3(handle)
            handle.seek(offset)
            if not _SIGNATURES["mov"](handle.read(8)):
                return
            fd = handle.fileno()
            end = os.fstat(fd).st_size
            window, window_at = b"", 0  # a box walk reads small, nearby pieces
            boxes = header_bytes = cmovs = 0
            found: set[bytes] = set()
            while offset < end:
                at = offset - window_at
                if at < 0 or (at + 32 > len(window) and window_at + len(window) < end):
                    window, window_at, at = os.pread(fd, _BOX_WINDOW, offset), offset, 0
                raw = window[at : at + 32]
                size, kind, head_size = int.from_bytes(raw[:4], "big"), raw[4:8], 8
                if size == 1:  # 64-bit size
                    size, head_size = int.from_bytes(raw[8:16], "big"), 16
                elif size == 0:  # to the end of the file
                    size = end - offset
                if kind == b"uuid":
                    head_size += 16
                if len(raw) < head_size or not head_size <= size <= end - offset:
                    if b"moov" in found and b"mdat" in found:
                        return
                    if len(raw) < head_size:
                        raise _box_error("is damaged or truncated: it ends inside a box header")
                    raise _box_error(
                        f"is damaged or truncated: it has a box {_box_name(kind)!r} of "
                        f"{size} bytes at byte {offset}, where {end - offset} are left"
                    )
                boxes += 1
                if boxes > _MP4_MAX_BOXES:
                    raise _box_error(f"has more than {_MP4_MAX_BOXES} boxes")
                if deadline is not None and not boxes % 4096:
                    deadline.check()
                offset += size
                if kind == b"mdat":
                    found.add(kind)
                    continue
                if kind in _MP4_MEDIA:  # FFmpeg reads a free box holding a moov as one
                    child = window[at + head_size + 4 : at + head_size + 8]
                    if len(child) < 4:
                        child = os.pread(fd, 4, offset - size + head_size + 4)
                    if child not in (b"mvhd", b"cmov"):
                        found.add(b"mdat" if kind == b"wide" else kind)
                        continue
                    kind = b"moov"
                found.add(kind)
                header_bytes += size
                if header_bytes <= _MP4_MAX_HEADER_BYTES:
                    body = _header_box(window, at, fd, offset - size, size)
                    if body:
                        inflated, cmovs = _cmov_bytes(
                            body, _MP4_MAX_HEADER_BYTES - header_bytes, cmovs
                        )
                        header_bytes += inflated
                if cmovs > _MP4_MAX_CMOV:
                    raise _box_error(f"has more than {_MP4_MAX_CMOV} compressed headers (cmov)")
                if header_bytes > _MP4_MAX_HEADER_BYTES:
                    raise _too_much_header(header_bytes)
    except OSError as exc:
        raise broken(f"The audio file could not be read ({exc.__class__.__name__}).") from exc


def _check_signature(head: bytes, stripped: bytes, demuxer: str) -> None:
    """Refuse a file whose first bytes (``_leading_bytes``) are not those of
    the format FFmpeg found in it.

    FFmpeg's MP3, AAC, AC-3 and MPEG-TS probes look for frames anywhere in the
    first megabyte, so a PDF, web page, image or zip with a song appended (a
    polyglot) is found to be "mp3". Requiring the format's own signature at the
    start means content, not a stray sync word, decides the type.
    """
    check = _SIGNATURES.get(demuxer)
    if check is not None:
        ok = check(head)
    else:
        sync = _SYNC_SIGNATURES.get(demuxer)
        ok = sync is not None and sync(stripped)
    if not ok:
        raise unsupported("The file does not start like an audio or video file.")
