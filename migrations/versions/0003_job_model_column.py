"""jobs.engine renamed jobs.model: it holds a model name

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 22:00:00

"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("engine", new_column_name="model")


def downgrade():
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("model", new_column_name="engine")
