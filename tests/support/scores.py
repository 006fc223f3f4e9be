"""Scores written as note lists, rendered to audio, with their ground truth.

A ``Score`` is what a composer wrote: notes in quarter-note units, a meter, a
tempo map, General MIDI programs. From it come the audio (a Standard MIDI
File rendered by FluidSynth with a General MIDI soundfont, or, where
FluidSynth is not installed, additive synthesis in numpy) and the ground
truth the analysis is scored against: beat and downbeat times, chord labels
in Harte syntax, section boundaries, key, tuning.

``arrangement`` writes songs from a chord progression (bass, chords, a
melody of chord tones, drums on channel 10) in 2/4, 3/4, 4/4 or 6/8; the
bench adds Bach chorales from music21's corpus.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
NOTE_NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
QUALITIES = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
}
DRUMS = 9  # MIDI channel 10


@dataclass
class Note:
    start: float  # quarter notes from the start
    length: float
    pitch: int
    velocity: int = 80
    channel: int = 0


@dataclass
class Score:
    notes: list[Note]
    bpm: float  # quarter notes per minute
    beat_ql: float = 1.0  # the counted beat: 1 for x/4, 1.5 for 6/8
    bar_ql: float = 4.0
    pickup_ql: float = 0.0  # length of an anacrusis before bar 1
    programs: dict[int, int] = field(default_factory=lambda: {0: 0})
    tuning_cents: float = 0.0
    # Tempo changes: (quarter-note position, bpm), after the initial ``bpm``.
    tempo_changes: list[tuple[float, float]] = field(default_factory=list)
    chords: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end ql, label)
    sections: list[tuple[float, str]] = field(default_factory=list)  # (start ql, label)
    key: str | None = None
    time_signature: str = "4/4"
    tail_seconds: float = 1.5

    @property
    def length_ql(self) -> float:
        return max(n.start + n.length for n in self.notes)

    def seconds(self, ql: float | np.ndarray) -> np.ndarray:
        """Time in seconds of quarter-note positions, through the tempo map."""
        q = np.asarray(ql, dtype=float)
        points = [(0.0, self.bpm), *sorted(self.tempo_changes)]
        out = np.zeros_like(q)
        elapsed = 0.0
        for i, (at, bpm) in enumerate(points):
            end = points[i + 1][0] if i + 1 < len(points) else np.inf
            inside = (q >= at) & (q < end) if np.isfinite(end) else q >= at
            out = np.where(inside, elapsed + (q - at) * 60.0 / bpm, out)
            if np.isfinite(end):
                elapsed += (end - at) * 60.0 / bpm
        return out

    def beat_times(self) -> np.ndarray:
        first = self.pickup_ql % self.beat_ql
        return self.seconds(np.arange(first, self.length_ql - 1e-9, self.beat_ql))

    def downbeat_times(self) -> np.ndarray:
        return self.seconds(np.arange(self.pickup_ql, self.length_ql - 1e-9, self.bar_ql))

    def chord_intervals(self) -> tuple[np.ndarray, list[str]]:
        starts = self.seconds(np.array([c[0] for c in self.chords]))
        ends = self.seconds(np.array([c[1] for c in self.chords]))
        return np.stack([starts, ends], axis=1), [c[2] for c in self.chords]

    def section_intervals(self) -> tuple[np.ndarray, list[str]]:
        starts = [s[0] for s in self.sections]
        ends = [*starts[1:], self.length_ql]
        times = self.seconds(np.array([starts, ends]).T)
        return times, [s[1] for s in self.sections]

    def duration(self) -> float:
        return float(self.seconds(self.length_ql)) + self.tail_seconds


# ------------------------------------------------------------------ arrangement


def chord_pitches(label: str, octave: int = 4) -> list[int]:
    """MIDI pitches of a Harte label's chord, root in the given octave."""
    root_name, quality = label.split(":")
    root = NOTE_NAMES[root_name[0]] + root_name[1:].count("#") - root_name[1:].count("b")
    base = 12 * (octave + 1) + root
    return [base + i for i in QUALITIES[quality]]


def arrangement(
    progression: list[str],
    *,
    time_signature: str = "4/4",
    bpm: float = 110.0,
    form: str = "",
    parts: dict[str, list[str]] | None = None,
    drums: bool = True,
    programs: tuple[int, int, int] = (0, 33, 73),  # piano, fingered bass, flute
    tuning_cents: float = 0.0,
    key: str | None = None,
    seed: int = 0,
    tempo_changes: list[tuple[float, float]] | None = None,
) -> Score:
    """A song: one chord per bar, bass and accompaniment in the meter's idiom,
    a melody of chord tones, drums on channel 10 if asked.

    ``form`` (e.g. ``"ABABCB"``) strings together ``parts`` (letter -> the
    chords of that section); without it the ``progression`` is played once.
    """
    rng = np.random.default_rng(seed)
    beats_per_bar, unit = (int(x) for x in time_signature.split("/"))
    compound = unit == 8 and beats_per_bar % 3 == 0
    bar_ql = beats_per_bar * 4.0 / unit
    beat_ql = 1.5 if compound else 4.0 / unit
    sequence: list[tuple[str, str]] = []
    sections: list[tuple[float, str]] = []
    if form and parts:
        for letter in form:
            sections.append((len(sequence) * bar_ql, letter))
            sequence += [(letter, c) for c in parts[letter]]
    else:
        sequence = [("A", c) for c in progression]
    notes: list[Note] = []
    chords: list[tuple[float, float, str]] = []
    melodies: dict[str, list[int]] = {}
    for bar, (letter, label) in enumerate(sequence):
        t = bar * bar_ql
        chords.append((t, t + bar_ql, label))
        triad = chord_pitches(label, 4)
        bass_root = chord_pitches(label, 2)[0]
        bass_fifth = bass_root + 7
        if time_signature == "3/4":
            notes.append(Note(t, 1.0, bass_root, 90, 1))
            for beat in (1, 2):
                notes += [Note(t + beat, 0.9, p, 62, 0) for p in triad]
        elif compound:
            notes.append(Note(t, 1.4, bass_root, 90, 1))
            notes.append(Note(t + 1.5, 1.4, bass_fifth, 80, 1))
            arpeggio = [*triad, triad[1] + 0, triad[0] + 12, triad[1]]
            for i in range(6):  # played as a player does: the beats (1 and 4) leaning
                velocity = 72 if i % 3 == 0 else 54
                notes.append(Note(t + 0.5 * i, 0.5, arpeggio[i % len(arpeggio)], velocity, 0))
        elif time_signature == "2/4":
            notes.append(Note(t, 0.9, bass_root, 92, 1))
            notes.append(Note(t + 1, 0.9, bass_fifth, 80, 1))
            notes += [Note(t + 0.5, 0.4, p, 60, 0) for p in triad]
            notes += [Note(t + 1.5, 0.4, p, 60, 0) for p in triad]
        else:
            notes.append(Note(t, 1.9, bass_root, 92, 1))
            notes.append(Note(t + 2, 1.9, bass_fifth if rng.random() < 0.5 else bass_root, 82, 1))
            for beat in range(4):
                notes += [Note(t + beat, 0.9, p, 66 if beat == 0 else 58, 0) for p in triad]
        # The melody: chord tones an octave up; a section's melody repeats with it.
        key_ = f"{letter}{bar}" if not form else f"{letter}:{label}:{bar % 4}"
        if key_ not in melodies:
            steps = int(bar_ql / 0.5)
            tones = [p + 12 for p in triad]
            melodies[key_] = [
                int(rng.choice(tones)) if rng.random() < 0.6 else -1 for _ in range(steps)
            ]
        for i, pitch in enumerate(melodies[key_]):
            if pitch > 0:
                notes.append(Note(t + 0.5 * i, 0.5, pitch, 70, 2))
        if drums:
            for i in range(int(bar_ql / 0.5)):
                pos = t + 0.5 * i
                notes.append(Note(pos, 0.25, 42, 55 if i % 2 else 70, DRUMS))
            if time_signature == "3/4":
                notes.append(Note(t, 0.5, 36, 110, DRUMS))
                notes.append(Note(t + 1, 0.5, 38, 60, DRUMS))
                notes.append(Note(t + 2, 0.5, 38, 60, DRUMS))
            elif compound:
                notes.append(Note(t, 0.5, 36, 110, DRUMS))
                notes.append(Note(t + 1.5, 0.5, 38, 90, DRUMS))
            elif time_signature == "2/4":
                notes.append(Note(t, 0.5, 36, 110, DRUMS))
                notes.append(Note(t + 1, 0.5, 38, 90, DRUMS))
            else:
                notes.append(Note(t, 0.5, 36, 110, DRUMS))
                notes.append(Note(t + 1, 0.5, 38, 90, DRUMS))
                notes.append(Note(t + 2, 0.5, 36, 100, DRUMS))
                notes.append(Note(t + 3, 0.5, 38, 90, DRUMS))
    return Score(
        notes=notes,
        bpm=bpm,
        beat_ql=beat_ql,
        bar_ql=bar_ql,
        programs={0: programs[0], 1: programs[1], 2: programs[2]},
        tuning_cents=tuning_cents,
        chords=chords,
        sections=sections,
        key=key,
        time_signature=time_signature,
        tempo_changes=tempo_changes or [],
    )


# --------------------------------------------------------------------- MIDI


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def midi_bytes(score: Score, ticks_per_quarter: int = 480) -> bytes:
    """A format-0 Standard MIDI File of the score (tempo map, programs, pitch bend)."""
    events: list[tuple[int, int, bytes]] = []  # (tick, order, data)
    for at, bpm in [(0.0, score.bpm), *score.tempo_changes]:
        micros = round(60_000_000 / bpm)
        events.append(
            (round(at * ticks_per_quarter), 0, b"\xff\x51\x03" + micros.to_bytes(3, "big"))
        )
    bend = round(8192 + score.tuning_cents / 200.0 * 8192)
    for channel, program in score.programs.items():
        events.append((0, 1, bytes([0xC0 | channel, program])))
        events.append((0, 1, bytes([0xE0 | channel, bend & 0x7F, bend >> 7])))
    for n in score.notes:
        on = round(n.start * ticks_per_quarter)
        off = max(on + 1, round((n.start + n.length) * ticks_per_quarter) - 1)
        events.append((on, 3, bytes([0x90 | n.channel, n.pitch, n.velocity])))
        events.append((off, 2, bytes([0x80 | n.channel, n.pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1]))
    track = bytearray()
    now = 0
    for tick, _, data in events:
        track += _varlen(tick - now) + data
        now = tick
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks_per_quarter)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


# ---------------------------------------------------------------- rendering


def soundfont() -> str | None:
    return next((p for p in SOUNDFONTS if Path(p).is_file()), None)


def fluidsynth_available() -> bool:
    return shutil.which("fluidsynth") is not None and soundfont() is not None


def render_fluidsynth(score: Score, rate: int = 44100) -> np.ndarray:
    """Stereo float32 (2, frames) from FluidSynth with a General MIDI soundfont."""
    font = soundfont()
    if shutil.which("fluidsynth") is None or font is None:
        raise RuntimeError("fluidsynth or a General MIDI soundfont is not installed")
    with tempfile.TemporaryDirectory() as folder:
        midi = Path(folder) / "score.mid"
        wav = Path(folder) / "score.wav"
        midi.write_bytes(midi_bytes(score))
        subprocess.run(
            [
                "fluidsynth",
                "-ni",
                "-q",
                "-g",
                "0.6",
                "-r",
                str(rate),
                "-F",
                str(wav),
                font,
                str(midi),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        audio, _ = sf.read(wav, dtype="float32", always_2d=True)
    return np.ascontiguousarray(audio.T)


def render_numpy(score: Score, rate: int = 44100) -> np.ndarray:
    """Stereo float32 (2, frames) by additive synthesis: harmonic tones with
    a plucked envelope for pitched channels, noise and sine bursts for drums."""
    frames = int(score.duration() * rate) + rate
    out = np.zeros(frames, np.float32)
    rng = np.random.default_rng(0)
    bend = 2 ** (score.tuning_cents / 1200.0)
    for n in score.notes:
        start = int(float(score.seconds(n.start)) * rate)
        end_time = float(score.seconds(n.start + n.length))
        length = max(1, int(end_time * rate) - start + int(0.05 * rate))
        t = np.arange(length) / rate
        gain = n.velocity / 127.0
        if n.channel == DRUMS:
            if n.pitch == 36:
                tone = np.sin(2 * np.pi * (50 + 80 * np.exp(-t / 0.03)) * t) * np.exp(-t / 0.15)
            elif n.pitch == 38:
                tone = rng.standard_normal(length) * np.exp(-t / 0.08) * 0.5
            else:
                tone = rng.standard_normal(length) * np.exp(-t / 0.02) * 0.2
        else:
            f0 = 440.0 * 2 ** ((n.pitch - 69) / 12) * bend
            tone = np.zeros(length)
            for k in range(1, 7):
                if k * f0 < rate / 2:
                    tone += np.sin(2 * np.pi * k * f0 * t) * np.exp(-1.2 * np.sqrt(k) * t) / k**1.2
            tone *= np.minimum(1.0, t / 0.005) * np.minimum(
                1.0, (length - np.arange(length)) / (0.03 * rate)
            )
        stop = min(frames, start + length)
        out[start:stop] += (gain * tone[: stop - start] * 0.15).astype(np.float32)
    peak = float(np.abs(out).max()) or 1.0
    out *= 0.8 / peak
    return np.stack([out, out])


def render(score: Score, renderer: str, rate: int = 44100) -> np.ndarray:
    return render_fluidsynth(score, rate) if renderer == "fluidsynth" else render_numpy(score, rate)
