"""jobs.model holds up to 255 characters: an ensemble's name joins its models'

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 00:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column(
            "model", existing_type=sa.String(length=64), type_=sa.String(length=255)
        )


def downgrade():
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column(
            "model", existing_type=sa.String(length=255), type_=sa.String(length=64)
        )
