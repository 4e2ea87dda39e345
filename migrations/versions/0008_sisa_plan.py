"""SISA service side: placement flag per training record, the (S, R) plan job kind

Revision ID: 0008
Revises: 0004
Create Date: 2026-11-30 17:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "training_records",
        sa.Column("likely_erased", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.drop_constraint(op.f("ck_jobs_kind"), "jobs", type_="check")
    op.create_check_constraint(
        op.f("ck_jobs_kind"), "jobs", "kind IN ('train', 'retrain_shard', 'plan_sisa')"
    )


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE kind = 'plan_sisa'")
    op.drop_constraint(op.f("ck_jobs_kind"), "jobs", type_="check")
    op.create_check_constraint(op.f("ck_jobs_kind"), "jobs", "kind IN ('train', 'retrain_shard')")
    op.drop_column("training_records", "likely_erased")
