"""Whether the job database's schema is the one this code expects.

An API started before ``flask db upgrade`` used to answer 500 on the first
query of a missing table, leaving the operator to read a trace. ``/readyz``
and the error handler ask this module instead, and name the revision found,
the head the code needs, and the command that moves one to the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sqlalchemy import Connection, inspect, text

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")
UPGRADE_COMMAND = "flask --app wsgi db upgrade"


@cache
def head_revisions() -> frozenset[str]:
    """The migrations' head(s). The scripts do not change under a running
    process, so they are read once."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory(MIGRATIONS_DIR).get_heads())


@dataclass(frozen=True)
class SchemaState:
    revisions: frozenset[str]  # what alembic_version holds; empty for a new database
    heads: frozenset[str]

    @property
    def current(self) -> bool:
        return self.revisions == self.heads

    def describe(self) -> str:
        found = ", ".join(sorted(self.revisions)) or "none (no tables)"
        head = ", ".join(sorted(self.heads))
        if self.current:
            return f"The database schema is at the head revision {head}."
        known = self.revisions <= _all_revisions()
        if not known:
            return (
                f"The database schema is at revision {found}, which this version of the "
                f"service does not know (its head is {head}): the database belongs to a "
                "newer release, or to another application."
            )
        return (
            f"The database schema is at revision {found}, not the head revision {head}: "
            f"run `{UPGRADE_COMMAND}` (compose.yaml's `migrate` service and `make run` do so at start)."
        )


@cache
def _all_revisions() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    return frozenset(script.revision for script in ScriptDirectory(MIGRATIONS_DIR).walk_revisions())


def schema_state(connection: Connection) -> SchemaState:
    """The revision(s) the database records. Raises what the driver raises when
    the database cannot be reached: that is a different problem from its schema."""
    if not inspect(connection).has_table("alembic_version"):
        revisions: frozenset[str] = frozenset()
    else:
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
        revisions = frozenset(str(row) for row in rows)
    return SchemaState(revisions=revisions, heads=head_revisions())
