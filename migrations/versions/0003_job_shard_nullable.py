"""jobs.shard is NULL for whole-model jobs (was -1)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 16:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # JobKind says what a job is about; a sentinel shard number said it a second time.
    op.alter_column("jobs", "shard", existing_type=sa.Integer(), nullable=True)
    op.execute("UPDATE jobs SET shard = NULL WHERE kind = 'train'")


def downgrade() -> None:
    op.execute("UPDATE jobs SET shard = -1 WHERE shard IS NULL")
    op.alter_column("jobs", "shard", existing_type=sa.Integer(), nullable=False)
