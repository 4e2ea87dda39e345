"""hosts and their purges: every host that holds local copies of fine-tuned weights, and its
deletion of an erased version's copies (pending, confirmed or absent)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 06:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hosts")),
    )
    op.create_index(op.f("ix_hosts_last_seen_at"), "hosts", ["last_seen_at"], unique=False)
    op.create_table(
        "host_purges",
        sa.Column("host_id", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.Uuid(), nullable=False),
        sa.Column("request_ids", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("checkpoints", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dropped", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'confirmed', 'absent')", name=op.f("ck_host_purges_status")
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_host_purges_host_id_hosts")
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["ml_models.id"], name=op.f("fk_host_purges_model_id_ml_models")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_host_purges")),
    )
    op.create_index(op.f("ix_host_purges_model_id"), "host_purges", ["model_id"], unique=False)
    op.create_index(
        "ix_host_purges_pending",
        "host_purges",
        ["host_id"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_host_purges_pending", table_name="host_purges")
    op.drop_index(op.f("ix_host_purges_model_id"), table_name="host_purges")
    op.drop_table("host_purges")
    op.drop_index(op.f("ix_hosts_last_seen_at"), table_name="hosts")
    op.drop_table("hosts")
