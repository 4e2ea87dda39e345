"""The from-scratch check of a restored fine-tune runs as its own job kind

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 02:30:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


KINDS = "kind IN ('train', 'retrain_shard', 'finetune', 'finetune_retrain', 'plan_sisa')"
KINDS_WITH_VERIFY = (
    "kind IN ('train', 'retrain_shard', 'finetune', 'finetune_retrain', 'plan_sisa', "
    "'finetune_verify')"
)


def upgrade() -> None:
    op.drop_constraint(op.f("ck_jobs_kind"), "jobs", type_="check")
    op.create_check_constraint(op.f("ck_jobs_kind"), "jobs", KINDS_WITH_VERIFY)


def downgrade() -> None:
    op.execute(
        "DELETE FROM action_jobs WHERE job_id IN (SELECT id FROM jobs WHERE kind = 'finetune_verify')"
    )
    op.execute("DELETE FROM jobs WHERE kind = 'finetune_verify'")
    op.drop_constraint(op.f("ck_jobs_kind"), "jobs", type_="check")
    op.create_check_constraint(op.f("ck_jobs_kind"), "jobs", KINDS)
