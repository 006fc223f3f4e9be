"""``flask`` commands for operators."""

from __future__ import annotations

import click
from flask import Flask


def register_cli(app: Flask) -> None:
    @app.cli.group("jobs")
    def jobs_group() -> None:
        """Job maintenance."""

    @jobs_group.command("purge-expired")
    def purge_expired_command() -> None:
        """Delete finished jobs past their expiry, with their files."""
        from app.services.auth import purge_revoked
        from app.services.jobs import purge_expired

        count = purge_expired()
        purge_revoked()
        click.echo(f"purged {count} expired job(s)")

    @app.cli.group("models")
    def models_group() -> None:
        """Model weights: list them, fetch them ahead of time."""

    @models_group.command("list")
    def list_command() -> None:
        """Every model, and whether its weights are present here."""
        from app.models import registry

        for entry in registry.catalogue(app.config):
            mark = "available" if entry["available"] else "missing"
            default = " (default)" if entry["default"] else ""
            click.echo(f"{entry['kind']:<14} {entry['name']:<16} {mark}{default}")

    @models_group.command("download")
    @click.argument("names", nargs=-1, required=True)
    def download_command(names: tuple[str, ...]) -> None:
        """Fetch Demucs, Whisper or MusicGen weights into MODELS_DIR (for air-gapped hosts)."""
        from tqdm import tqdm

        from app.models import demucs_engine, musicgen_engine, whisper_engine

        failed = []
        for name in tqdm(names, desc="models", unit="model", disable=len(names) < 2):
            try:
                if name in whisper_engine.KNOWN:
                    path = whisper_engine.download(name, app.config) / "model.bin"
                elif name in musicgen_engine.PRETRAINED:
                    path = musicgen_engine.download(name, app.config) / "config.json"
                else:
                    path = demucs_engine.download(name, app.config)
            except Exception as exc:
                failed.append(name)
                click.echo(f"{name}: failed: {exc}", err=True)
            else:
                click.echo(f"{name}: saved to {path.parent}")
        if failed:
            raise SystemExit(1)
