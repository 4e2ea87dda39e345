"""SISA service side: placement flag per training record, the (S, R) plan job kind

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 17:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


KINDS = "kind IN ('train', 'retrain_shard', 'finetune', 'finetune_retrain')"
KINDS_WITH_PLAN = "kind IN ('train', 'retrain_shard', 'finetune', 'finetune_retrain', 'plan_sisa')"


def upgrade() -> None:
    op.add_column(
        "training_records",
        sa.Column("likely_erased", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.drop_constraint(op.f("ck_jobs_kind"), "jobs", type_="check")
    op.create_check_constraint(op.f("ck_jobs_kind"), "jobs", KINDS_WITH_PLAN)


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE kind = 'plan_sisa'")
    op.drop_constraint(op.f("ck_jobs_kind"), "jobs", type_="check")
    op.create_check_constraint(op.f("ck_jobs_kind"), "jobs", KINDS)
    op.drop_column("training_records", "likely_erased")
