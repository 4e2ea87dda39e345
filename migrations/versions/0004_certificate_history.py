"""certificates: history per (request, model), one current

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 16:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # An interim certificate (rules active, B or exact removal still to come) is superseded by
    # a later one; both are kept, exactly one per (request, model) is current.
    op.add_column("certificates", sa.Column("supersedes_id", sa.Uuid(), nullable=True))
    op.add_column(
        "certificates", sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_foreign_key(
        op.f("fk_certificates_supersedes_id_certificates"),
        "certificates",
        "certificates",
        ["supersedes_id"],
        ["id"],
    )
    op.drop_constraint(op.f("uq_certificates_request_id"), "certificates", type_="unique")
    op.create_index(
        "uq_certificates_one_current",
        "certificates",
        ["request_id", "model_id"],
        unique=True,
        postgresql_where=sa.text("superseded_at IS NULL"),
    )
    op.create_index("ix_certificates_request_id", "certificates", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_certificates_request_id", table_name="certificates")
    op.drop_index("uq_certificates_one_current", table_name="certificates")
    op.execute("DELETE FROM certificates WHERE superseded_at IS NOT NULL")
    op.create_unique_constraint(
        op.f("uq_certificates_request_id"), "certificates", ["request_id", "model_id"]
    )
    op.drop_constraint(
        op.f("fk_certificates_supersedes_id_certificates"), "certificates", type_="foreignkey"
    )
    op.drop_column("certificates", "superseded_at")
    op.drop_column("certificates", "supersedes_id")
