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
