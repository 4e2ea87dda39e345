"""fine-tuned generative models: two actions per (request, model), fine-tuning job kinds

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 17:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = "kind IN ('train', 'retrain_shard')"
NEW_KINDS = "kind IN ('train', 'retrain_shard', 'finetune', 'finetune_retrain')"


def upgrade() -> None:
    # Policy "both": verifier rules now and exact removal later, two actions for one model.
    op.drop_constraint(op.f("uq_request_actions_request_id"), "request_actions", type_="unique")
    op.create_unique_constraint(
        op.f("uq_request_actions_request_id"),
        "request_actions",
        ["request_id", "model_id", "strategy"],
    )
    op.drop_constraint(op.f("ck_jobs_kind"), "jobs", type_="check")
    op.create_check_constraint(op.f("ck_jobs_kind"), "jobs", NEW_KINDS)


def downgrade() -> None:
    op.execute("DELETE FROM jobs WHERE kind IN ('finetune', 'finetune_retrain')")
    op.drop_constraint(op.f("ck_jobs_kind"), "jobs", type_="check")
    op.create_check_constraint(op.f("ck_jobs_kind"), "jobs", OLD_KINDS)
    op.drop_constraint(op.f("uq_request_actions_request_id"), "request_actions", type_="unique")
    op.create_unique_constraint(
        op.f("uq_request_actions_request_id"), "request_actions", ["request_id", "model_id"]
    )
