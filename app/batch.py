"""Batch use without HTTP: ``flask separate|transcribe|generate``.

The commands call the service functions the workers run (``separate_file``,
``transcribe_path``, ``generate_file``), validate options with the same
schemas as the API, and show progress on a tqdm bar through the ``Progress``
protocol. No job rows, no broker, no server: files in, files out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from marshmallow import Schema, ValidationError
from tqdm import tqdm

from app import audio, transcripts
from app.errors import ServiceError

TRANSCRIPT_FORMATS = (*transcripts.FORMATS, "lrc_words")
EXTENSIONS = {**transcripts.EXTENSIONS, "lrc_words": "words.lrc"}


class TqdmProgress:
    """The ``Progress`` protocol on a tqdm bar: 0..1 becomes 0..100 %, the stage
    shows after the bar. Like the job reporter, progress only moves forward."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar
        self.progress = 0.0
        self._stage: str | None = None

    def __call__(self, progress: float, stage: str | None = None, *, force: bool = False) -> None:
        self.progress = max(self.progress, min(max(float(progress), 0.0), 1.0))
        if stage is not None and stage != self._stage:
            self._stage = stage
            self.bar.set_postfix_str(stage, refresh=False)
        self.bar.update(round(self.progress * 100, 1) - self.bar.n)
        if force or stage is not None:
            self.bar.refresh()

    def stage(self, stage: str, progress: float | None = None) -> None:
        self(self.progress if progress is None else progress, stage)


@contextlib.contextmanager
def progress_bar(label: str, quiet: bool) -> Iterator[TqdmProgress]:
    bar = tqdm(
        total=100,
        desc=label,
        unit="%",
        bar_format="{desc}: {percentage:3.0f}%|{bar:30}| {elapsed}<{remaining}{postfix}",
        file=sys.stderr,
        disable=quiet,
        leave=True,
    )
    report = TqdmProgress(bar)
    try:
        yield report
        report(1.0, "done")
    finally:
        bar.close()


def validate(schema: Schema, values: dict[str, Any]) -> dict[str, Any]:
    """Options through the API's schema (without its file field), so the command
    line accepts exactly what the API accepts."""
    data = {k: v for k, v in values.items() if v is not None}
    try:
        loaded = schema.load(data, partial=("file",))
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_": exc.messages}
        detail = "; ".join(
            f"--{field.replace('_', '-')}: {' '.join(map(str, msgs)) if isinstance(msgs, list) else msgs}"
            for field, msgs in messages.items()
        )
        raise click.UsageError(detail) from None
    loaded.pop("callback_url", None)
    return loaded


def probe(path: Path) -> dict[str, Any]:
    """The input's metadata, with the same checks (and errors) as an upload."""
    config = current_app.config
    info = audio.probe(path, max_seconds=float(config["MAX_AUDIO_SECONDS"]))
    return {**info.to_dict(), "filename": path.name, "size": path.stat().st_size}


def publish(path: Path, final: Path) -> Path:
    """Move a finished file into place, readable as any file the user makes
    (work files are private while they are written)."""
    path.replace(final)
    umask = os.umask(0)
    os.umask(umask)
    final.chmod(0o666 & ~umask)
    return final


def output_folder(source: Path, out: Path | None) -> Path:
    folder = (out or source.parent).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def fetched_input(url: str, quiet: bool) -> Iterator[Path]:
    """The file at ``url`` in a temporary folder, under the name its URL (or
    ``Content-Disposition``) gives, fetched with the jobs' guarded fetch
    (``url_input.fetch``: the SSRF rules, ``MAX_UPLOAD_MB``,
    ``URL_FETCH_TIMEOUT_SECONDS``); removed afterwards."""
    from urllib.parse import urlsplit

    from app.services import url_input

    with tempfile.TemporaryDirectory(prefix=".fetch-") as folder:
        label = urlsplit(url).hostname or url
        with progress_bar(f"{label} (download)", quiet) as report:
            fetched = url_input.fetch(url, Path(folder), report)
        name = fetched.filename.lstrip(".") or "download"
        yield fetched.path.rename(Path(folder) / name)


Work = Callable[[Path, Path | None], list[Path]]


def run_each(
    files: tuple[Path, ...], urls: tuple[str, ...], work: Work, out: Path | None, quiet: bool
) -> None:
    """Run ``work`` on each file, then on each URL's file (fetched first; its
    outputs go to ``out`` or the current folder). An input that fails is
    reported and skipped; a summary ends the run (on stderr: stdout keeps
    only the paths written), and the command exits 1 if any input failed."""
    if not files and not urls:
        raise click.UsageError("Give at least one file or --url.")
    failures: list[tuple[str, str]] = []
    written: list[tuple[str, list[Path]]] = []
    inputs: list[tuple[str, Path | None]] = [(str(f), f) for f in files]
    inputs += [(url, None) for url in urls]
    for name, source in inputs:
        try:
            if source is not None:
                paths = work(source, out)
            else:
                with fetched_input(name, quiet) as path:
                    paths = work(path, out or Path.cwd())
        except ServiceError as exc:
            failures.append((name, f"{exc.code}: {exc.message}"))
            click.echo(f"{name}: failed: {exc.message}", err=True)
            continue
        written.append((name, paths))
        for path in paths:
            click.echo(str(path))
    click.echo(f"{len(written)} succeeded, {len(failures)} failed.", err=True)
    for name, paths in written:
        click.echo(f"  ok      {name} -> {', '.join(str(p) for p in paths)}", err=True)
    for name, reason in failures:
        click.echo(f"  failed  {name}: {reason}", err=True)
    if failures:
        raise SystemExit(1)


def separate_one(
    source: Path, model: str, params: dict[str, Any], out: Path | None, quiet: bool
) -> list[Path]:
    """Stems of ``song.mp3`` go to ``<out or its folder>/song/<stem>.<format>``."""
    from app.services.separation import separate_file

    info = probe(source)
    target = output_folder(source, out) / source.stem
    if target.exists() and not target.is_dir():
        raise ServiceError(f"{target} exists and is not a folder.", code="output_exists")
    work = Path(tempfile.mkdtemp(prefix=f".{source.stem}-", dir=target.parent))
    try:
        with progress_bar(source.name, quiet) as report:
            _names, paths, _rate, _device = separate_file(source, info, model, params, work, report)
        target.mkdir(exist_ok=True)
        return [publish(path, target / path.name) for path in paths]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def transcribe_one(
    source: Path,
    model: str,
    params: dict[str, Any],
    formats: tuple[str, ...],
    out: Path | None,
    quiet: bool,
) -> list[Path]:
    """``song.mp3`` gives ``<out or its folder>/song.<ext>`` per format."""
    from app.services.transcription import transcribe_path

    info = probe(source)
    folder = output_folder(source, out)
    targets = [(fmt, folder / f"{source.stem}.{EXTENSIONS[fmt]}") for fmt in formats]
    if any(path.resolve() == source.resolve() for _, path in targets):
        raise ServiceError("An output would overwrite the input.", code="output_exists")
    with (
        tempfile.TemporaryDirectory(prefix=".transcribe-", dir=folder) as work,
        progress_bar(source.name, quiet) as report,
    ):
        result, _device = transcribe_path(source, info, model, params, Path(work), report)
    written = []
    for fmt, path in targets:
        if fmt == "lrc_words":
            body = transcripts.render_enhanced_lrc(result)
        else:
            body = transcripts.render(result, fmt)
        path.write_text(body, encoding="utf-8")
        written.append(path)
    return written


def align_one(
    source: Path, model: str, params: dict[str, Any], out: Path | None, quiet: bool
) -> list[Path]:
    """``song.mp3`` + lyrics give ``song.lrc`` (enhanced: a tag per word) and
    ``song.alignment.json`` (every line and word, unaligned ones included)."""
    import json

    from app.services.alignment import align_path

    info = probe(source)
    folder = output_folder(source, out)
    lrc, data = folder / f"{source.stem}.lrc", folder / f"{source.stem}.alignment.json"
    if source.resolve() in (lrc.resolve(), data.resolve()):
        raise ServiceError("An output would overwrite the input.", code="output_exists")
    with (
        tempfile.TemporaryDirectory(prefix=".align-", dir=folder) as work,
        progress_bar(source.name, quiet) as report,
    ):
        result, _device = align_path(source, info, model, params, Path(work), report)
    lrc.write_text(transcripts.render_enhanced_lrc(result), encoding="utf-8")
    keep = ("language", "duration", "words_total", "words_aligned", "words_unaligned", "lines")
    data.write_text(
        json.dumps({k: result[k] for k in keep}, ensure_ascii=False, indent=2) + "\n",
        encoding="utf-8",
    )
    lines = result["lines"]
    unsung = sum(1 for line in lines if not line["aligned"])
    click.echo(
        f"{source.name}: {result['words_aligned']} of {result['words_total']} words timed; "
        f"{len(lines) - unsung} of {len(lines)} lines sung"
        + (f" ({unsung} not sung: no times)" if unsung else ""),
        err=True,
    )
    return [lrc, data]


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "generated"


CLICK_TYPES: dict[str, Any] = {
    "integer": int,
    "number": float,
    "boolean": bool,
    "string": str,
}


def engine_options(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command-line option per engine option of ``kind`` (``--shifts``,
    ``--kernel-size``, ...), from the families registered when the app is made.
    Which model takes which is checked by the API's schema, like a request."""
    from app.models import registry

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for name, (option, families) in reversed(registry.all_options(kind).items()):
            flag = "--" + name.replace("_", "-")
            text = f"{', '.join(f.label for f in families)}: {option.description}"
            if option.default is not None:
                text += f" Default {option.default}."
            if option.type == "boolean":
                decl = [f"{flag}/--no-{name.replace('_', '-')}", name]
                command = click.option(*decl, default=None, help=text)(command)
            elif option.choices is not None:
                choice = click.Choice(option.choices)
                command = click.option(flag, name, type=choice, help=text)(command)
            else:
                command = click.option(flag, name, type=CLICK_TYPES[option.type], help=text)(
                    command
                )
        return command

    return decorate


def register_batch_cli(app: Flask) -> None:
    from app.models import registry

    quiet_option = click.option(
        "--quiet", "-q", is_flag=True, help="No progress bars (paths written still print)."
    )
    out_option = click.option(
        "--out",
        "-o",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Write here instead of next to each input.",
    )
    files_argument = click.argument(
        "files",
        nargs=-1,
        required=False,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
    )
    url_option = click.option(
        "--url",
        "urls",
        multiple=True,
        help="An http(s) URL of audio to fetch and use as an input (repeat for several); "
        "fetched with the API's rules: public addresses only (URL_FETCH_ALLOW_HOSTS "
        "exempts hosts), MAX_UPLOAD_MB, URL_FETCH_TIMEOUT_SECONDS.",
    )

    @app.cli.command("separate")
    @files_argument
    @url_option
    @click.option(
        "--model",
        "-m",
        help=f"A model from `flask models list` (default {registry.DEFAULTS['separation']}).",
    )
    @click.option("--two-stems", help="Karaoke mode: this source and no_<source>, e.g. vocals.")
    @click.option("--stems", help="Only these sources, comma-separated.")
    @click.option(
        "--format", "output_format", type=click.Choice(audio.OUTPUT_FORMATS), default="wav"
    )
    @click.option("--bit-depth", type=click.Choice(audio.BIT_DEPTHS), default="16")
    @click.option(
        "--mp3-bitrate", type=click.Choice([str(b) for b in audio.MP3_BITRATES]), default="320"
    )
    @engine_options("separation")
    @click.option("--clip-mode", type=click.Choice(["rescale", "clamp", "none"]), default="rescale")
    @out_option
    @quiet_option
    def separate_command(
        files: tuple[Path, ...],
        urls: tuple[str, ...],
        out: Path | None,
        quiet: bool,
        **options: Any,
    ) -> None:
        """Split audio files into stems: song.mp3 -> song/vocals.wav, song/drums.wav, ...

        Runs here, in this process, with the same code as the separation jobs.
        """
        from app.blueprints.separations import SeparationFormSchema
        from app.services.separation import prepare

        params = validate(SeparationFormSchema(), options)
        model, params = prepare(params)
        run_each(
            files,
            urls,
            lambda source, folder: separate_one(source, model, params, folder, quiet),
            out,
            quiet,
        )

    @app.cli.command("transcribe")
    @files_argument
    @url_option
    @click.option("--model", "-m", help="A Whisper model (default tiny.en, bundled).")
    @click.option(
        "--format",
        "-f",
        "formats",
        type=click.Choice(TRANSCRIPT_FORMATS),
        multiple=True,
        help="srt (default), vtt, txt, json, tsv, lrc, lrc_words; repeat for several.",
    )
    @click.option("--language", help="Language code (default: detected).")
    @click.option("--task", type=click.Choice(["transcribe", "translate"]))
    @click.option("--word-timestamps", is_flag=True, default=None, help="Timings per word.")
    @click.option("--vad", "vad_filter", is_flag=True, default=None, help="Skip non-speech (VAD).")
    @click.option("--prompt", "initial_prompt", help="Text that sets the style or vocabulary.")
    @click.option("--beam-size", type=int)
    @click.option("--temperature", type=float)
    @click.option(
        "--decoding",
        type=click.Choice(["auto", "sequential", "batched"]),
        help="batched: VAD chunks decoded several at a time; auto (default): batched for"
        " long inputs.",
    )
    @click.option("--batch-size", type=int, help="Chunks per batch when batched.")
    @click.option(
        "--isolate-vocals", is_flag=True, default=None, help="Separate vocals first (lyrics)."
    )
    @click.option(
        "--separation-model",
        help="With --isolate-vocals (default: the best vocals model that can run here, "
        f"else {registry.DEFAULTS['separation']}).",
    )
    @out_option
    @quiet_option
    def transcribe_command(
        files: tuple[Path, ...],
        urls: tuple[str, ...],
        formats: tuple[str, ...],
        out: Path | None,
        quiet: bool,
        **options: Any,
    ) -> None:
        """Transcribe audio files: song.mp3 -> song.srt (and other formats with -f).

        Runs here, in this process, with the same code as the transcription jobs.
        """
        from app.blueprints.transcriptions import TranscriptionFormSchema
        from app.services.transcription import prepare

        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # the bar says it all
        params = validate(TranscriptionFormSchema(), options)
        model, params = prepare(params)
        chosen = tuple(dict.fromkeys(formats or ("srt",)))
        run_each(
            files,
            urls,
            lambda source, folder: transcribe_one(source, model, params, chosen, folder, quiet),
            out,
            quiet,
        )

    @app.cli.command("align")
    @click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option(
        "--url",
        help="Instead of FILE: an http(s) URL of the song, fetched with the API's rules "
        "(public addresses only, MAX_UPLOAD_MB, URL_FETCH_TIMEOUT_SECONDS).",
    )
    @click.option("--model", "-m", help="A Whisper model (default tiny.en, bundled).")
    @click.option("--language", help="Language code (default: detected).")
    @click.option("--isolate-vocals", is_flag=True, default=None, help="Separate the vocals first.")
    @click.option(
        "--separation-model",
        help="With --isolate-vocals (default: the best vocals model that can run here).",
    )
    @out_option
    @quiet_option
    def align_command(
        paths: tuple[Path, ...], url: str | None, out: Path | None, quiet: bool, **options: Any
    ) -> None:
        """Time the lyrics you have against a song: FILE LYRICS, or --url URL LYRICS
        -> song.lrc (a time tag per word) and song.alignment.json.

        LYRICS is plain text, one line per sung line, or an LRC to re-time. Lines
        that are not sung get no time. Runs here, with the same code as the
        alignment jobs.
        """
        from app.blueprints.alignments import AlignmentFormSchema
        from app.services.alignment import prepare

        wanted = 1 if url else 2
        if len(paths) != wanted:
            usage = "--url URL LYRICS" if url else "FILE LYRICS (or --url URL LYRICS)"
            raise click.UsageError(f"Give {usage}.")
        *files, lyrics = paths
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
        params = validate(AlignmentFormSchema(), {**options, "lyrics": lyrics.read_bytes()})
        model, params = prepare(params)
        run_each(
            tuple(files),
            (url,) if url else (),
            lambda source, folder: align_one(source, model, params, folder, quiet),
            out,
            quiet,
        )

    @app.cli.command("generate")
    @click.argument("prompt")
    @click.option("--duration", "-d", type=float, help="Seconds (1-120, default 8).")
    @click.option("--seed", type=int, help="Same seed, parameters and model: same audio.")
    @click.option("--model", "-m", help="Default facebook/musicgen-small.")
    @click.option("--guidance-scale", type=float)
    @click.option("--temperature", type=float)
    @click.option("--top-k", type=int)
    @click.option("--top-p", type=float)
    @click.option(
        "--melody",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Audio whose melody conditions a -melody model.",
    )
    @click.option(
        "--continuation",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Audio the model continues.",
    )
    @click.option(
        "--format", "output_format", type=click.Choice(audio.OUTPUT_FORMATS), default="wav"
    )
    @click.option("--bit-depth", type=click.Choice(audio.BIT_DEPTHS), default="16")
    @click.option(
        "--mp3-bitrate", type=click.Choice([str(b) for b in audio.MP3_BITRATES]), default="320"
    )
    @click.option(
        "--out",
        "-o",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("."),
        show_default=True,
        help="Folder for <prompt>-<seed>.<format>.",
    )
    @quiet_option
    def generate_command(
        prompt: str,
        melody: Path | None,
        continuation: Path | None,
        out: Path,
        quiet: bool,
        **options: Any,
    ) -> None:
        """Generate music from a text prompt into <out>/<prompt>-<seed>.wav.

        Runs here, in this process, with the same code as the generation jobs.
        """
        from app.blueprints.generations import GenerationSchema
        from app.services.generation import generate_file, prepare

        if melody and continuation:
            raise click.UsageError("Give --melody or --continuation, not both.")
        params = validate(GenerationSchema(), {"prompt": prompt, **options})
        source = melody or continuation
        if source is not None:
            params["input_role"] = "melody" if melody else "continuation"
            try:
                probe(source)
            except ServiceError as exc:
                raise click.ClickException(f"{source}: {exc.message}") from None
        model, params = prepare(params)
        folder = out.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".generate-", dir=folder) as work:
            try:
                with progress_bar(slug(prompt, 24), quiet) as report:
                    result = generate_file(model, params, Path(work), report, source)
            except ServiceError as exc:
                raise click.ClickException(exc.message) from None
            used = result["parameters"]
            written = Path(work) / result["files"][0]["name"]
            final = folder / f"{slug(prompt)}-{used['seed']}{written.suffix}"
            publish(written, final)
        click.echo(str(final))
        details = ", ".join(f"{k}={used[k]}" for k in sorted(used) if k not in ("prompt",))
        click.echo(f"seed {used['seed']} ({details})", err=True)
