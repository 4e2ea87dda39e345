"""audit events authenticated: a MAC under a key the database never holds

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 02:20:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows written before this revision have no MAC: verification reports them unauthenticated
    # (the database cannot compute one: it never holds the key).
    op.add_column('audit_events', sa.Column('mac', sa.String(length=120), nullable=True))


def downgrade() -> None:
    op.drop_column('audit_events', 'mac')
