"""What helps a person choose a model: published quality, weight licence, speed measured here.

One table per family, read by that family's ``catalogue`` and passed to
``model_entry`` (``quality``, ``license``, ``license_source``, ``speed``), so
``GET /api/v1/models`` and the page's model description show them.

Rules for the figures:

* ``quality``: only SDR (dB, higher is cleaner) that a public source states
  for exactly these weights, each with its benchmark and source. Figures from
  different benchmarks are not comparable with each other. A model with no
  published figure has ``None`` (``null``), never an estimate.
* ``license``: the licence the weights are published under, as their
  publisher states it; ``"not stated"`` when they state none; ``"none (no
  weights)"`` for a model without weights; ``None`` where it was not checked.
* ``speed``: only what a benchmark of ``bench/`` measured on this project's
  2-core CPU machine (random weights of the same architecture cost the same
  compute), with which one and on what input (``measured``); figures of one
  run are comparable with each other, figures of different runs less so.
  ``None`` for what was not measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MULTISONG = "Multisong (MVSep)"
MUSDB18_HQ = "MUSDB18-HQ test set"
ZFTURBO = "https://github.com/ZFTurbo/Music-Source-Separation-Training/blob/main/docs/pretrained_models.md"
DEMUCS_README = "https://github.com/facebookresearch/demucs/blob/main/README.md"
WHISPER_README = "https://github.com/openai/whisper/blob/main/README.md"
AUDIOCRAFT_README = "https://github.com/facebookresearch/audiocraft/blob/main/README.md"

NO_WEIGHTS = "none (no weights)"
NOT_STATED = "not stated"

# What bench/model_speed.py ran: one in-process separation of a 30 s stereo
# 44.1 kHz signal, shifts=1, overlap=0.25, no model load, no HTTP.
SPEED_RUN = "bench/model_speed.py, 2026-12-04, 2-core CPU, 30 s stereo 44.1 kHz, shifts 1"
# What bench/separation.py's model comparison ran (--skip-speed --skip-memory,
# its second run of 2026-12-05): one 60 s stereo 44.1 kHz file through
# separate_file as a worker runs it (decode, windows, stems written), model
# resident, one process per model, each with its default options; htdemucs,
# bs_roformer_viperx_1297 and mel_band_roformer_kim in the same run, so their
# figures compare (bench/README.md has the table and the machine's load).
COMPARE_RUN = (
    "bench/separation.py model comparison, 2026-12-05, 2-core CPU, 60 s stereo 44.1 kHz "
    "through separate_file, model resident, default options (htdemucs shifts 1; "
    "RoFormers their published chunk_size 352800 and num_overlap 2)"
)


@dataclass(frozen=True)
class Sdr:
    """One published figure: ``stem`` is a stem name, or ``"average"`` for the
    mean over the model's four stems as the source reports it."""

    stem: str
    sdr_db: float
    benchmark: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "stem": self.stem,
            "sdr_db": self.sdr_db,
            "benchmark": self.benchmark,
            "source": self.source,
        }


@dataclass(frozen=True)
class Facts:
    quality: tuple[Sdr, ...] | None = None
    license: str | None = None
    license_source: str | None = None
    real_time_factor: float | None = None  # processing seconds per audio second, measured here
    measured: str = SPEED_RUN  # which benchmark run gave real_time_factor

    def fields(self) -> dict[str, Any]:
        """The ``model_entry`` keywords."""
        return {
            "quality": [q.to_dict() for q in self.quality] if self.quality is not None else None,
            "license": self.license,
            "license_source": self.license_source,
            "speed": (
                {"real_time_factor": self.real_time_factor, "measured": self.measured}
                if self.real_time_factor is not None
                else None
            ),
        }


def _multisong(**stems: float) -> tuple[Sdr, ...]:
    return tuple(Sdr(stem, sdr, MULTISONG, ZFTURBO) for stem, sdr in stems.items())


# ------------------------------------------------------------------------ separation

HPSS = Facts(quality=None, license=NO_WEIGHTS, license_source=None, real_time_factor=0.021)


# Demucs's README: "Demucs is released under the MIT license"; the pretrained
# weights are published by the same repository with no licence of their own.
def _demucs(
    quality: tuple[Sdr, ...] | None = None,
    real_time_factor: float | None = None,
    measured: str = SPEED_RUN,
) -> Facts:
    return Facts(quality, "MIT", DEMUCS_README + "#license", real_time_factor, measured)


# bench/model_speed.py's run for the Demucs v3 models (random weights of the
# architectures its V3_BAGS comment derives from demucs's training config and
# docs; each bag with its published model list, per-source weights and segment
# 44 s), on an otherwise idle machine, htdemucs timed twice before them (the
# first model a process runs is slower) and once after. Two earlier runs on a
# machine shared with another benchmark are in bench/README.md.
DEMUCS_V3_RUN = (
    "bench/model_speed.py, 2026-12-05 10:36 UTC, 2-core CPU, 30 s stereo 44.1 kHz, "
    "shifts 1, the bag's segment 44 s (htdemucs 0.618 before and 0.643 after them in the "
    "same run)"
)
# mdx_q and mdx_extra_q hold the same networks quantised with diffq; demucs
# unpacks them into float weights when it loads them, so they compute what
# mdx and mdx_extra do and carry those figures.
DEMUCS_V3_QUANTISED = (
    "as {plain}: diffq-quantised weights of the same networks, unpacked to float at load, "
    "so the same compute; timed as {plain} in "
)

DEMUCS: dict[str, Facts] = {
    # ZFTurbo's "HTDemucs4" row, weights 955717e8 (the htdemucs bag's one model).
    "htdemucs": _demucs(
        quality=(
            *_multisong(vocals=8.24, drums=10.88, bass=11.76, other=5.74),
            Sdr("average", 9.16, MULTISONG, ZFTURBO),
        ),
        real_time_factor=0.519,
        measured=COMPARE_RUN,
    ),
    # ZFTurbo's "HTDemucs4 FT <stem>" rows: the four models of the htdemucs_ft
    # bag (04573f0d vocals, f7e0c4bc drums, d12395a8 bass, 92cfc3b6 other), each
    # used for its own stem. The demucs README's comparison table gives
    # "HT Demucs f.t. (v4)" an overall SDR of 9.0 on MUSDB HQ (its 9.20 is the
    # sparse-attention model, which was not released).
    "htdemucs_ft": _demucs(
        quality=(
            *_multisong(vocals=8.38, drums=11.13, bass=11.96, other=5.85),
            Sdr("average", 9.0, MUSDB18_HQ, DEMUCS_README),
        ),
        real_time_factor=3.615,
    ),
    # ZFTurbo's "HTDemucs4 (6 stems)" row, weights 5c90dfd2: no figure for
    # other, piano or guitar. Speed: bench/model_speed.py, htdemucs timed
    # before and after it in the same run.
    "htdemucs_6s": _demucs(
        quality=_multisong(vocals=8.05, drums=10.22, bass=11.22),
        real_time_factor=0.736,
        measured=(
            "bench/model_speed.py, 2026-12-05 08:24, 2-core CPU, 30 s stereo 44.1 kHz, "
            "shifts 1 (htdemucs 0.727 before and 0.672 after it in the same run)"
        ),
    ),
    # ZFTurbo's "Demucs3 mmi" row, weights 75fc33f5 (the hdemucs_mmi bag's one model).
    # Speed: one HDemucs (48 channels, depth 6, nfft 4096), in DEMUCS_V3_RUN.
    "hdemucs_mmi": _demucs(
        quality=(
            *_multisong(vocals=8.22, drums=10.70, bass=11.17, other=5.42),
            Sdr("average", 8.88, MULTISONG, ZFTURBO),
        ),
        real_time_factor=0.336,
        measured=DEMUCS_V3_RUN,
    ),
    # Two 64-channel time-domain Demucs and two HDemucs (MDX 2021 track A).
    "mdx": _demucs(real_time_factor=2.370, measured=DEMUCS_V3_RUN),
    # Four HDemucs (MDX 2021 track B).
    "mdx_extra": _demucs(real_time_factor=1.702, measured=DEMUCS_V3_RUN),
    "mdx_q": _demucs(
        real_time_factor=2.370,
        measured=DEMUCS_V3_QUANTISED.format(plain="mdx") + DEMUCS_V3_RUN,
    ),
    "mdx_extra_q": _demucs(
        real_time_factor=1.702,
        measured=DEMUCS_V3_QUANTISED.format(plain="mdx_extra") + DEMUCS_V3_RUN,
    ),
}
# A model in the local repo: nothing is known about where its weights came from.
DEMUCS_LOCAL = Facts(license=NOT_STATED)

# ZFTurbo's vocals rows for the community RoFormer checkpoints (viperx's
# model_bs_roformer_ep_317_sdr_12.9755, Kim's Mel-Band RoFormer); the 12.97 in
# viperx's name is the author's own validation, not a benchmark. Their
# publishers state no licence for the weights. Speed: the run that measured
# htdemucs's, random weights from the published configs (bench/configs/).
ROFORMER: dict[str, Facts] = {
    "bs_roformer_viperx_1297": Facts(
        quality=_multisong(vocals=10.87),
        license=NOT_STATED,
        real_time_factor=14.538,
        measured=COMPARE_RUN,
    ),
    "mel_band_roformer_kim": Facts(
        quality=_multisong(vocals=10.98),
        license=NOT_STATED,
        real_time_factor=4.751,
        measured=COMPARE_RUN,
    ),
}
ROFORMER_LOCAL = Facts(license=NOT_STATED)

# bench/separation.py's model comparison run again for the ensemble (htdemucs
# 0.458 in that run, so its ratio to htdemucs is 33.75).
ENSEMBLE_RUN = (
    "bench/separation.py model comparison, 2026-12-05 00:56, 2-core CPU, 60 s stereo "
    "44.1 kHz through separate_file, models resident, avg_wave (htdemucs 0.458 in the "
    "same run)"
)
# Presets: no published figure for these exact combinations; their weights'
# licences are their members' (the engine lists them).
ENSEMBLE: dict[str, Facts] = {
    "vocals_ensemble": Facts(real_time_factor=15.466, measured=ENSEMBLE_RUN),
}

# bench/separation.py's model comparison for MDX23C (random weights from the
# published config, bench/configs/mdx23c_vocals_zfturbo.yaml): a 15 s input,
# since the 60 s one takes this model over 10 minutes; htdemucs ran 0.700 in
# the same run (its padding weighs more on 15 s), so its ratio to htdemucs is
# 13.6.
MDX23C_RUN = (
    "bench/separation.py model comparison, 2026-12-05 08:19, 2-core CPU, 15 s stereo "
    "44.1 kHz through separate_file, model resident, its config's num_overlap 4 "
    "(htdemucs 0.700 in the same run)"
)

# The same comparison for UVR's MDX23C (bench/configs/mdx23c_instvoc_hq.yaml:
# ZFTurbo's network and STFT, num_overlap 8 instead of 4) on a 15 s input,
# htdemucs before and after it, on an otherwise idle machine: 23x htdemucs in
# wall time and in CPU seconds. An earlier run on a machine shared with another
# benchmark is in bench/README.md.
MDX23C_INSTVOC_RUN = (
    "bench/separation.py model comparison, 2026-12-05 10:38 UTC, 2-core CPU, 15 s stereo "
    "44.1 kHz through separate_file, model resident, its config's num_overlap 8 "
    "(htdemucs 0.679 before and 0.714 after it in the same run)"
)

# ZFTurbo's "MDX23C" vocals row (model_vocals_mdx23c_sdr_10.17.ckpt). No source
# states a figure for UVR's MDX23C-8KFFT-InstVoc_HQ weights. Neither publisher
# states a licence for the weights (ZFTurbo's repository licenses its code, MIT).
MDX23C: dict[str, Facts] = {
    "mdx23c_vocals_zfturbo": Facts(
        quality=_multisong(vocals=10.17),
        license=NOT_STATED,
        real_time_factor=9.524,
        measured=MDX23C_RUN,
    ),
    "mdx23c_instvoc_hq": Facts(
        quality=None,
        license=NOT_STATED,
        real_time_factor=15.738,
        measured=MDX23C_INSTVOC_RUN,
    ),
}
MDX23C_LOCAL = Facts(license=NOT_STATED)

# --------------------------------------------------------------------- other kinds

# openai/whisper's README: "Whisper's code and model weights are released under
# the MIT License". faster-whisper runs CTranslate2 conversions of them; the
# Distil-Whisper models are distilled from them and published by Hugging Face.
WHISPER = Facts(license="MIT", license_source=WHISPER_README + "#license")
WHISPER_DISTIL = Facts()  # not checked: licence null
WHISPER_LOCAL = Facts(license=NOT_STATED)

# facebookresearch/audiocraft's README: "The weights in this repository are
# released under the CC-BY-NC 4.0 license" (non-commercial use only).
MUSICGEN = Facts(license="CC-BY-NC-4.0", license_source=AUDIOCRAFT_README + "#license")
MUSICGEN_LOCAL = Facts(license=NOT_STATED)
