"""Reading and writing audio files: probe, decode, encode.

``iter_decode`` and ``AudioWriter`` are the streaming counterparts of
``decode`` and ``encode`` (which are built on them, so the samples and files
are the same): a long song can be processed window by window in memory that
does not grow with its length.

Everything a client uploads goes through PyAV (FFmpeg), so any container or
codec FFmpeg can decode is accepted, and every failure leaves as an
``AudioError`` with a stable code instead of one of PyAV's many exception types.

Callers use the names re-exported here (``from app import audio``); each job
has its own module:

- ``errors``: ``AudioError`` and the failures every other module raises.
- ``limits``: sample rates, channels, decoded size and the probe's deadline,
  with the errors for going past them.
- ``guards``: what an upload must pass before FFmpeg parses it (allowed
  demuxers, file signatures, ID3 tags, MP4 boxes), and the one guarded open.
- ``probing``: ``probe`` and ``read_tags``: headers and one frame, no decoding.
- ``isolation``: ``probe_isolated``, the probe in a child of the fork server.
- ``decoding``: ``decode`` and ``iter_decode``.
- ``encoding``: ``encode``, ``AudioWriter`` and the output formats.

The package imports neither Flask nor SQLAlchemy: the probe's fork server
(``app/isolated.py``) imports it alone, and so do its children.
"""

from __future__ import annotations

from app.audio.decoding import MAX_SAMPLE_MAGNITUDE, decode, iter_decode
from app.audio.encoding import (
    BIT_DEPTHS,
    CONTENT_TYPES,
    MP3_BITRATES,
    OUTPUT_FORMATS,
    AudioWriter,
    encode,
)
from app.audio.errors import AudioError
from app.audio.isolation import probe_isolated
from app.audio.limits import MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from app.audio.probing import AudioInfo, probe, read_tags

__all__ = [
    "BIT_DEPTHS",
    "CONTENT_TYPES",
    "MAX_CHANNELS",
    "MAX_SAMPLE_MAGNITUDE",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "MP3_BITRATES",
    "OUTPUT_FORMATS",
    "AudioError",
    "AudioInfo",
    "AudioWriter",
    "decode",
    "encode",
    "iter_decode",
    "probe",
    "probe_isolated",
    "read_tags",
]
