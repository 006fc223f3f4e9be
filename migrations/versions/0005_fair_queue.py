"""jobs.dispatched_at: when a queued job's task message was published

A queued job now waits in the database until its owner has a free turn
(app/services/fair_queue.py); only then is its message published. Jobs queued
or running before this revision already have their message: they count as
dispatched when they were created.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 02:30:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatched_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_jobs_owner_status", ["owner_id", "status"])
    op.execute("UPDATE jobs SET dispatched_at = created_at WHERE status IN ('queued', 'running')")


def downgrade():
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_owner_status")
        batch_op.drop_column("dispatched_at")
