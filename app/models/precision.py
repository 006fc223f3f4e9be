"""The number format a separation network runs in (``SEPARATION_PRECISION``).

On a CPU whose cores multiply bfloat16 natively (AMX tiles, or AVX-512 BF16),
torch's CPU autocast runs the convolutions, matrix products and attention in
bfloat16 and leaves the STFT, norms and overlap-add in float32. The stems stay
more than 30 dB (SNR) from float32's, the precision a faster mode may trade
(``bench/separation.py`` prints the figure for each run), and the network takes
markedly less time. On a CPU without those instructions bfloat16 is emulated and
slower, so ``auto`` keeps float32 there. GPUs keep what they ran before: Demucs
in float32, the MSST families in float16 where their config trains so
(``use_amp``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from app.config import PRECISIONS


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX or AVX-512 BF16).

    torch's own ``_is_mkldnn_bf16_supported`` also says yes where oneDNN only
    emulates bfloat16 on AVX-512, which is slower than float32.
    """
    import torch

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    for probe in probes:
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # a private probe missing its kernel support
            continue
    return False


def resolve(setting: str | None, device: str) -> str:
    """What a network on ``device`` runs in: ``float32`` or ``bfloat16``.

    Only the CPU path changes; ``app.config`` refuses an unknown setting at
    start-up.
    """
    setting = (setting or "auto").lower()
    if setting not in PRECISIONS:
        raise ValueError(
            f"SEPARATION_PRECISION must be one of {', '.join(PRECISIONS)}, not {setting!r}"
        )
    if not device.startswith("cpu"):
        return "float32"
    if setting == "auto":
        return "bfloat16" if cpu_has_native_bfloat16() else "float32"
    return setting


@contextlib.contextmanager
def cpu_autocast(precision: str, device: str) -> Iterator[None]:
    """Run the block under CPU autocast when ``precision`` asks for bfloat16.

    A window that moved to the CPU after a GPU ran out of memory runs in
    float32, as the GPU path did.
    """
    if precision != "bfloat16" or not device.startswith("cpu"):
        yield
        return
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16):
        yield
