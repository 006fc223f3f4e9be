"""``flask`` commands for operators."""

from __future__ import annotations

import click
from flask import Flask


class QuotaType(click.ParamType):
    """A quota on the command line: a whole number >= 0, or ``default``."""

    name = "N|default"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | str:
        if isinstance(value, int) or str(value).strip().lower() == "default":
            return value if isinstance(value, int) else "default"
        try:
            number = int(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a whole number or 'default'", param, ctx)
        if number < 0:
            self.fail("must be 0 (no limit) or more", param, ctx)
        return number


QUOTA = QuotaType()


def _quota(effective: int | None, override: int | None) -> str:
    """How a quota reads in ``users list``: the effective value ("none" for no
    limit), with a star when it is the user's own override."""
    if override is not None:
        return f"{override or 'none'}*"
    return "none" if effective is None else str(effective)


def _override(value: int | None) -> str:
    if value is None:
        return "default"
    return str(value) if value else "none (no limit)"


def register_cli(app: Flask) -> None:
    from app.batch import register_batch_cli

    register_batch_cli(app)  # flask separate | transcribe | generate

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

    @app.cli.group("users")
    def users_group() -> None:
        """Accounts: list them, set per-user quotas."""

    @users_group.command("list")
    def users_list_command() -> None:
        """Every account with its jobs, storage and quota overrides."""
        from sqlalchemy import select

        from app.extensions import db
        from app.records import User
        from app.services import quotas

        click.echo(
            f"{'email':<40} {'active':>6} {'stored MB':>10} {'max active':>10} {'max MB':>8}"
        )
        for user in db.session.execute(select(User).order_by(User.email)).scalars():
            usage = quotas.usage(user)
            max_mb = usage["max_storage_bytes"]
            click.echo(
                f"{user.email:<40} {usage['active_jobs']:>6} "
                f"{usage['stored_bytes'] / quotas.MB:>10.1f} "
                f"{_quota(usage['max_active_jobs'], user.max_active_jobs):>10} "
                f"{_quota(max_mb // quotas.MB if max_mb else None, user.max_storage_mb):>8}"
            )

    @users_group.command("set-quota")
    @click.argument("email")
    @click.option(
        "--max-active-jobs",
        type=QUOTA,
        help="Jobs queued or running at once; 0 = no limit, 'default' = MAX_ACTIVE_JOBS.",
    )
    @click.option(
        "--max-storage-mb",
        type=QUOTA,
        help="Stored inputs and results in MB; 0 = no limit, 'default' = MAX_STORAGE_MB.",
    )
    def set_quota_command(
        email: str, max_active_jobs: int | str | None, max_storage_mb: int | str | None
    ) -> None:
        """Override one account's quotas (the environment sets everyone's defaults)."""
        from sqlalchemy import select

        from app.extensions import db
        from app.records import User
        from app.services.auth import normalise_email

        user = db.session.execute(
            select(User).where(User.email == normalise_email(email))
        ).scalar_one_or_none()
        if user is None:
            raise click.ClickException(f"no account with the e-mail {email}")
        if max_active_jobs is None and max_storage_mb is None:
            raise click.UsageError("give --max-active-jobs and/or --max-storage-mb")
        if max_active_jobs is not None:
            user.max_active_jobs = None if max_active_jobs == "default" else int(max_active_jobs)
        if max_storage_mb is not None:
            user.max_storage_mb = None if max_storage_mb == "default" else int(max_storage_mb)
        db.session.commit()
        click.echo(
            f"{user.email}: max active jobs {_override(user.max_active_jobs)}, "
            f"max storage MB {_override(user.max_storage_mb)}"
        )

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
        """Fetch models' weights into MODELS_DIR (for air-gapped hosts)."""
        from tqdm import tqdm

        from app.models import registry

        failed = []
        for name in tqdm(names, desc="models", unit="model", disable=len(names) < 2):
            try:
                folder = registry.download(name, app.config)
            except Exception as exc:
                failed.append(name)
                click.echo(f"{name}: failed: {exc}", err=True)
            else:
                click.echo(f"{name}: saved to {folder}")
        if failed:
            raise SystemExit(1)
