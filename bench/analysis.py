"""Analysis benchmark: our music analysis against librosa's standard recipe.

Run by hand (not part of the test suite), from the repository root:

    .venv/bin/python bench/analysis.py            # the whole set, both sides
    .venv/bin/python bench/analysis.py --pieces pop_c waltz_f --verbose

Needs FluidSynth and a General MIDI soundfont (Debian: fluidsynth,
fluid-soundfont-gm) and the dev requirements (librosa, mir_eval, music21).

The set: public-domain compositions rendered to audio by FluidSynth, ground
truth from the score (tests/support/scores.py holds the score model, the
MIDI writer and the renderer). Bach chorales from music21's corpus (no
drums; 4/4 and 3/4; the key from the key signature and the final bass note;
chords per beat from the notes sounding in it), public-domain folk tunes'
chord progressions and progressions written here, arranged with bass,
accompaniment, a melody of chord tones and, for some, drums, in 2/4, 3/4,
4/4 and 6/8, several keys and tempi, one with a tempo change, three detuned.

Scored with mir_eval: key weighted score, beat and downbeat F-measure,
chord ``majmin`` and ``sevenths`` weighted overlap, segment boundary
detection F at 3 s; tempo Acc1 (within 4 % of the score's beat tempo) and
Acc2 (also at 2, 3, 1/2 or 1/3 of it) are computed here, as mir_eval has no
Acc1/Acc2. Seconds per minute of audio are wall time on this machine.

librosa's recipe: ``chroma_cqt`` on the 22.05 kHz mono signal; the key by
correlating its mean with the 24 rotated Krumhansl-Kessler profiles;
``beat_track``; chords as the best binary template (the same vocabulary as
ours) per beat on beat-synchronous (median) chroma; librosa has no downbeat
tracker, so its downbeats are every 4th beat from the first; sections by
``segment.agglomerative`` on the beat-synchronous chroma, told the true
number of sections (an advantage ours does not get); tuning by
``estimate_tuning``.

Prints a table per piece (``--verbose``), the totals, and PASS/MISS per goal.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.music_features import analyze  # noqa: E402 - needs ROOT on sys.path
from tests.support.scores import (  # noqa: E402
    QUALITIES,
    Note,
    Score,
    arrangement,
    fluidsynth_available,
    render_fluidsynth,
)

RATE = 44100
PITCHES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

GOALS = {
    "key": 0.90,
    "tempo_acc1": 0.90,
    "beat_f": 0.90,
    "downbeat_f": 0.75,
    "majmin": 0.75,
    "sevenths": 0.60,
}


# ------------------------------------------------------------------ the set


@dataclass
class Piece:
    name: str
    description: str
    build: Callable[[], Score]


def chorale(name: str, bpm: float, program: int) -> Score:
    """A Bach chorale from music21's corpus, with its ground truth.

    Chords per beat: the pitch classes sounding in the beat, weighted by how
    long they sound, are matched to every chord of the vocabulary (the
    weight inside the chord, less a penalty for each chord note not sounding,
    plus a bonus when the lowest note is the root); passing notes make a
    beat's label sometimes debatable, as in any chord annotation.
    """
    from music21 import corpus

    score = corpus.parse(f"bach/{name}")
    measures = score.parts[0].getElementsByClass("Measure")
    signature = score.recurse().getElementsByClass("TimeSignature")[0]
    bar_ql = float(signature.barDuration.quarterLength)
    first = measures[0]
    pickup = (
        float(first.barDuration.quarterLength - first.paddingLeft) if first.paddingLeft else 0.0
    )
    pickup = pickup % bar_ql
    notes: list[Note] = []
    bass_part = len(score.parts) - 1
    for index, part in enumerate(score.parts):
        for n in part.stripTies().flatten().notes:
            if n.quarterLength <= 0:
                continue
            offset = float(n.getOffsetInHierarchy(part))
            for p in n.pitches:
                position = (offset - pickup) % bar_ql
                velocity = 84 if abs(position) < 1e-6 else 72
                notes.append(Note(offset, float(n.quarterLength), p.midi, velocity, 0))
        if index == bass_part:
            final_bass = part.flatten().notes[-1].pitches[0].pitchClass
    key_signature = score.recurse().getElementsByClass("KeySignature")[0]
    major, minor = key_signature.asKey("major").tonic, key_signature.asKey("minor").tonic
    if final_bass == minor.pitchClass:
        key = f"{minor.name.replace('-', 'b')} minor"
    else:
        key = f"{major.name.replace('-', 'b')} major"
    result = Score(
        notes=notes,
        bpm=bpm,
        beat_ql=1.0,
        bar_ql=bar_ql,
        pickup_ql=pickup,
        programs={0: program},
        key=key,
        time_signature=signature.ratioString,
    )
    result.chords = _chords_from_notes(notes, result.length_ql)
    return result


def _chords_from_notes(notes: list[Note], length: float) -> list[tuple[float, float, str]]:
    labels: list[tuple[float, float, str]] = []
    for beat in np.arange(0.0, length, 1.0):
        weights = np.zeros(12)
        lowest = None
        for n in notes:
            overlap = min(n.start + n.length, beat + 1.0) - max(n.start, beat)
            if overlap > 0:
                weights[n.pitch % 12] += overlap
                if n.start <= beat + 1e-6 and (lowest is None or n.pitch < lowest):
                    lowest = n.pitch
        if weights.sum() == 0:
            label = "N"
        else:
            weights /= weights.sum()
            best, label = -np.inf, "N"
            for quality, intervals in QUALITIES.items():
                for root in range(12):
                    tones = [(root + i) % 12 for i in intervals]
                    fit = weights[tones].sum() - 0.15 * np.sum(weights[tones] == 0)
                    fit -= 0.02 * (len(tones) - 3)
                    if lowest is not None and lowest % 12 == root:
                        fit += 0.1
                    if fit > best + 1e-9:
                        best, label = fit, f"{PITCHES[root]}:{quality}"
        if labels and labels[-1][2] == label:
            labels[-1] = (labels[-1][0], beat + 1.0, label)
        else:
            labels.append((beat, beat + 1.0, label))
    return labels


def pieces() -> list[Piece]:
    pop = {
        "A": ["C:maj", "A:min", "F:maj", "G:7"],
        "B": ["F:maj7", "G:maj", "E:min7", "A:min"],
        "C": ["D:min7", "G:7", "C:maj7", "C:maj"],
    }
    sevenths = {
        "A": ["Eb:maj7", "C:min7", "Ab:maj7", "Bb:7"],
        "B": ["Ab:maj", "Bb:maj", "G:min7", "C:min"],
        "C": ["F:min7", "Bb:7", "Eb:maj7", "Eb:7"],
    }
    ballad = {
        "A": ["A:min7", "D:min7", "G:7", "C:maj7"],
        "B": ["F:maj7", "E:7", "A:min", "A:min7"],
    }
    shifting = {
        "A": ["D:maj", "B:min", "G:maj", "A:maj"],
        "B": ["G:maj", "A:7", "F#:min", "B:min"],
    }
    waltz = {
        "A": ["F:maj", "C:7", "C:7", "F:maj"],
        "B": ["Bb:maj", "F:maj", "C:7", "F:maj"],
        "C": ["D:min", "G:7", "C:maj", "C:7"],
    }
    # Public-domain folk tunes' progressions (traditional).
    amazing_grace = {
        "A": ["G:maj", "G:7", "C:maj", "G:maj", "G:maj", "E:min", "D:maj", "D:7"],
        "B": ["G:maj", "G:7", "C:maj", "G:maj", "E:min", "D:7", "G:maj", "G:maj"],
    }
    greensleeves = {
        "A": ["A:min", "G:maj", "F:maj", "E:maj", "A:min", "G:maj", "E:maj", "E:maj"],
        "B": ["C:maj", "G:maj", "A:min", "E:maj", "C:maj", "G:maj", "E:maj", "A:min"],
    }
    rising_sun = {"A": ["A:min", "C:maj", "D:maj", "F:maj", "A:min", "C:maj", "E:maj", "E:maj"]}
    saints = {
        "A": ["F:maj", "F:maj", "F:maj", "F:maj", "F:maj", "F:maj", "C:7", "C:7"],
        "B": ["F:maj", "F:7", "Bb:maj", "Bb:min", "F:maj", "C:7", "F:maj", "F:maj"],
    }
    return [
        Piece(
            "bwv66.6", "chorale, F# minor, 4/4, 84 BPM, piano", lambda: chorale("bwv66.6", 84, 0)
        ),
        Piece(
            "bwv269", "chorale, G major, 3/4, 96 BPM, harpsichord", lambda: chorale("bwv269", 96, 6)
        ),
        Piece(
            "bwv26.6", "chorale, A minor, 4/4, 72 BPM, organ", lambda: chorale("bwv26.6", 72, 19)
        ),
        Piece("bwv347", "chorale, A major, 4/4, 80 BPM, piano", lambda: chorale("bwv347", 80, 0)),
        Piece(
            "bwv153.1",
            "chorale, E minor, 4/4, 88 BPM, nylon guitar",
            lambda: chorale("bwv153.1", 88, 24),
        ),
        Piece("bwv86.6", "chorale, E major, 4/4, 76 BPM, piano", lambda: chorale("bwv86.6", 76, 0)),
        Piece(
            "pop_c",
            "ABABCB, C major, 4/4, 110 BPM, drums",
            lambda: arrangement([], bpm=110, form="ABABCB", parts=pop, key="C major"),
        ),
        Piece(
            "sevenths_eb",
            "ABABCB, Eb major, 4/4, 96 BPM, drums, +30 cents, electric piano",
            lambda: arrangement(
                [],
                bpm=96,
                form="ABABCB",
                parts=sevenths,
                key="Eb major",
                tuning_cents=30,
                programs=(4, 33, 65),
                seed=1,
            ),
        ),
        Piece(
            "ballad_am",
            "ABAB, A minor, 4/4, 70 BPM, no drums, -20 cents",
            lambda: arrangement(
                [],
                bpm=70,
                form="ABAB",
                parts=ballad,
                key="A minor",
                drums=False,
                tuning_cents=-20,
                programs=(0, 32, 40),
                seed=2,
            ),
        ),
        Piece(
            "tempo_change_d",
            "ABABAB, D major, 4/4, 100 BPM then 124 BPM from bar 17, drums",
            lambda: arrangement(
                [],
                bpm=100,
                form="ABABAB",
                parts=shifting,
                key="D major",
                tempo_changes=[(64.0, 124.0)],
                programs=(25, 33, 56),
                seed=3,
            ),
        ),
        Piece(
            "waltz_f",
            "ABABCB, F major, 3/4, 150 BPM, drums",
            lambda: arrangement(
                [],
                time_signature="3/4",
                bpm=150,
                form="ABABCB",
                parts=waltz,
                key="F major",
                programs=(0, 32, 71),
                seed=4,
            ),
        ),
        Piece(
            "amazing_grace",
            "Amazing Grace (trad.), AB AB, G major, 3/4, 90 BPM, no drums, guitar",
            lambda: arrangement(
                [],
                time_signature="3/4",
                bpm=90,
                form="ABAB",
                parts=amazing_grace,
                key="G major",
                drums=False,
                programs=(24, 32, 73),
                seed=5,
            ),
        ),
        Piece(
            "greensleeves",
            "Greensleeves (trad.), ABAB, A minor, 6/8, 100 dotted-quarter BPM, drums",
            lambda: arrangement(
                [],
                time_signature="6/8",
                bpm=150,
                form="ABAB",
                parts=greensleeves,
                key="A minor",
                programs=(24, 32, 73),
                seed=6,
            ),
        ),
        Piece(
            "rising_sun",
            "House of the Rising Sun (trad.), AAA, A minor, 6/8, 80 dotted-quarter BPM, no drums, -10 cents",
            lambda: arrangement(
                [],
                time_signature="6/8",
                bpm=120,
                form="AAA",
                parts=rising_sun,
                key="A minor",
                drums=False,
                tuning_cents=-10,
                programs=(25, 32, 73),
                seed=7,
            ),
        ),
        Piece(
            "saints",
            "When the Saints (trad.), ABAB, F major, 2/4, 120 BPM, drums, brass",
            lambda: arrangement(
                [],
                time_signature="2/4",
                bpm=120,
                form="ABAB",
                parts=saints,
                key="F major",
                programs=(0, 58, 56),
                seed=8,
            ),
        ),
    ]


# -------------------------------------------------------------- the systems


def ours(audio: np.ndarray) -> dict[str, Any]:
    result = analyze(audio, RATE)
    return {
        "key": result["key"]["name"],
        "tempo": result["tempo_bpm"],
        "beats": np.array(result["beats"]),
        "downbeats": np.array(result["downbeats"]),
        "chords": result["chords"],
        "boundaries": [s["start"] for s in result["sections"]],
        "tuning": result["tuning"]["cents"],
        "meter": result["meter"]["time_signature"],
    }


def _librosa_templates() -> tuple[list[str], np.ndarray]:
    labels, rows = [], []
    for quality, intervals in QUALITIES.items():
        for root in range(12):
            row = np.zeros(12)
            row[[(root + i) % 12 for i in intervals]] = 1.0
            labels.append(f"{PITCHES[root]}:{quality}")
            rows.append(row / np.linalg.norm(row))
    return labels, np.array(rows)


def librosa_recipe(audio: np.ndarray, sections: int) -> dict[str, Any]:
    import librosa

    sr = 22050
    y = librosa.resample(librosa.to_mono(audio), orig_sr=RATE, target_sr=sr)
    chroma = librosa.feature.chroma_cqt(y=y, sr=sr)
    major = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
    minor = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
    mean = chroma.mean(axis=1)
    best, key = -np.inf, None
    for mode, profile in (("major", major), ("minor", minor)):
        for tonic in range(12):
            r = float(np.corrcoef(mean, np.roll(profile, tonic))[0, 1])
            if r > best:
                best, key = r, f"{PITCHES[tonic]} {mode}"
    tempo, beat_frames = librosa.beat.beat_track(y=y, sr=sr)
    beats = librosa.frames_to_time(beat_frames, sr=sr)
    bounds = librosa.util.fix_frames(beat_frames, x_min=0, x_max=chroma.shape[1])
    synced = librosa.util.sync(chroma, bounds, aggregate=np.median)
    times = librosa.frames_to_time(bounds, sr=sr)
    labels, templates = _librosa_templates()
    unit = synced / np.maximum(np.linalg.norm(synced, axis=0, keepdims=True), 1e-12)
    best_labels = [labels[i] for i in np.argmax(templates @ unit, axis=0)]
    chords = [
        {"start": float(a), "end": float(b), "label": label}
        for a, b, label in zip(times[:-1], times[1:], best_labels, strict=False)
    ]
    k = max(1, min(sections, synced.shape[1] - 1))
    starts = librosa.segment.agglomerative(synced, k)
    boundaries = [float(times[i]) for i in starts]
    return {
        "key": key,
        "tempo": float(np.atleast_1d(tempo)[0]),
        "beats": beats,
        "downbeats": beats[::4],
        "chords": chords,
        "boundaries": boundaries,
        "tuning": 100.0 * float(librosa.estimate_tuning(y=y, sr=sr)),
        "meter": "4/4",
    }


# ---------------------------------------------------------------- scoring


def _lab(chords: list[dict], duration: float) -> tuple[np.ndarray, list[str]]:
    intervals = np.array([[c["start"], c["end"]] for c in chords], dtype=float)
    intervals[-1, 1] = max(intervals[-1, 1], duration)
    return intervals, [c["label"] for c in chords]


def score_piece(score: Score, estimate: dict[str, Any], duration: float) -> dict[str, float]:
    import mir_eval

    truth_tempo = score.bpm / score.beat_ql
    tempo = estimate["tempo"] or 0.0
    acc1 = float(abs(tempo - truth_tempo) <= 0.04 * truth_tempo)
    acc2 = float(
        any(abs(tempo - f * truth_tempo) <= 0.04 * f * truth_tempo for f in (1, 2, 3, 1 / 2, 1 / 3))
    )
    ref_intervals, ref_labels = score.chord_intervals()
    ref_intervals, ref_labels = mir_eval.util.adjust_intervals(
        ref_intervals, ref_labels, 0.0, duration, "N", "N"
    )
    est_intervals, est_labels = _lab(estimate["chords"], duration)
    est_intervals, est_labels = mir_eval.util.adjust_intervals(
        est_intervals, est_labels, 0.0, duration, "N", "N"
    )
    chord_scores = mir_eval.chord.evaluate(ref_intervals, ref_labels, est_intervals, est_labels)
    out = {
        "key": mir_eval.key.weighted_score(score.key, estimate["key"]) if estimate["key"] else 0.0,
        "tempo_acc1": acc1,
        "tempo_acc2": acc2,
        "beat_f": mir_eval.beat.f_measure(score.beat_times(), estimate["beats"]),
        "downbeat_f": mir_eval.beat.f_measure(score.downbeat_times(), estimate["downbeats"]),
        "majmin": chord_scores["majmin"],
        "sevenths": chord_scores["sevenths"],
        "tuning_error": abs(estimate["tuning"] - score.tuning_cents),
        "duration": duration,
    }
    if score.sections:
        ref, _ = score.section_intervals()
        bounds = sorted(set([0.0, *estimate["boundaries"]]))
        est = np.array([[a, b] for a, b in zip(bounds, [*bounds[1:], duration], strict=True)])
        ref = np.vstack([ref, [[ref[-1, 1], duration]]]) if ref[-1, 1] < duration - 0.1 else ref
        ref[-1, 1] = duration
        _, _, f = mir_eval.segment.detection(ref, est, window=3.0, trim=True)
        out["segment_f"] = f
    return out


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    weights = np.array([r["duration"] for r in rows])
    out = {}
    for metric in ("key", "tempo_acc1", "tempo_acc2", "beat_f", "downbeat_f", "tuning_error"):
        out[metric] = float(np.mean([r[metric] for r in rows]))
    for metric in ("majmin", "sevenths"):
        out[metric] = float(np.average([r[metric] for r in rows], weights=weights))
    segmented = [r["segment_f"] for r in rows if "segment_f" in r]
    out["segment_f"] = float(np.mean(segmented)) if segmented else float("nan")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pieces", nargs="*", help="only these pieces (names as printed)")
    parser.add_argument("--verbose", action="store_true", help="a table per piece")
    parser.add_argument("--no-librosa", action="store_true", help="ours only")
    args = parser.parse_args(argv)
    if not fluidsynth_available():
        print(
            "fluidsynth or a General MIDI soundfont is missing (apt-get install fluidsynth fluid-soundfont-gm)"
        )
        return 2
    chosen = [p for p in pieces() if not args.pieces or p.name in args.pieces]
    systems: dict[str, Callable[[np.ndarray, Score], dict[str, Any]]] = {
        "ours": lambda audio, _score: ours(audio)
    }
    if not args.no_librosa:
        import librosa

        # numba compiles librosa's beat tracker on first use: not counted.
        librosa.beat.beat_track(y=np.random.default_rng(0).standard_normal(22050 * 5), sr=22050)
        systems["librosa"] = lambda audio, score: librosa_recipe(audio, max(1, len(score.sections)))
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    seconds: dict[str, float] = dict.fromkeys(systems, 0.0)
    total_audio = 0.0
    for piece in chosen:
        score = piece.build()
        audio = render_fluidsynth(score, RATE)
        duration = audio.shape[1] / RATE
        total_audio += duration
        for name, system in systems.items():
            started = time.perf_counter()
            estimate = system(audio, score)
            seconds[name] += time.perf_counter() - started
            row = score_piece(score, estimate, duration)
            rows[name].append(row)
            if args.verbose:
                shown = " ".join(f"{k}={v:.2f}" for k, v in row.items() if k != "duration")
                print(
                    f"{piece.name:15} {name:8} key={estimate['key']!s:9} truth={score.key:9} "
                    f"tempo={estimate['tempo'] or 0:.1f}/{score.bpm / score.beat_ql:.1f} "
                    f"meter={estimate['meter']}/{score.time_signature} {shown}"
                )
    print(f"\n{len(chosen)} pieces, {total_audio / 60:.1f} minutes of audio\n")
    summaries = {name: summarise(r) for name, r in rows.items()}
    names = list(systems)
    print(f"{'metric':22}" + "".join(f"{n:>10}" for n in names) + f"{'goal':>8}  verdict")
    metrics = [
        ("key weighted", "key"),
        ("tempo Acc1", "tempo_acc1"),
        ("tempo Acc2", "tempo_acc2"),
        ("beat F", "beat_f"),
        ("downbeat F", "downbeat_f"),
        ("chord majmin", "majmin"),
        ("chord sevenths", "sevenths"),
        ("segment F @3 s", "segment_f"),
        ("tuning error (cents)", "tuning_error"),
    ]
    for title, metric in metrics:
        values = [summaries[n][metric] for n in names]
        goal = GOALS.get(metric)
        verdict = ""
        if goal is not None:
            ok = values[0] >= goal
            beats_librosa = len(values) < 2 or values[0] >= values[1] - 1e-9
            verdict = "PASS" if ok and beats_librosa else "MISS"
            if not beats_librosa:
                verdict += " (librosa better)"
        goal_text = f"{goal:.2f}" if goal is not None else ""
        print(f"{title:22}" + "".join(f"{v:10.3f}" for v in values) + f"{goal_text:>8}  {verdict}")
    per_minute = [seconds[n] / (total_audio / 60) for n in names]
    print(f"{'seconds per minute':22}" + "".join(f"{v:10.2f}" for v in per_minute))
    print("(ours: the whole analysis, loudness and true peak included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
