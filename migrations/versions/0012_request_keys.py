"""request keys: per-request data key id, keys destroyed at, the filing reason sealed

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 02:20:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('erasure_requests', sa.Column('reason_encrypted', sa.LargeBinary(), nullable=True))
    op.add_column('erasure_requests', sa.Column('key_id', sa.String(length=80), nullable=True))
    op.add_column(
        'erasure_requests',
        sa.Column('keys_destroyed_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        op.f('ix_erasure_requests_keys_destroyed_at'),
        'erasure_requests',
        ['keys_destroyed_at'],
        unique=False,
    )
    op.alter_column('erasure_requests', 'reason', existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE erasure_requests SET reason = '' WHERE reason IS NULL")
    op.alter_column('erasure_requests', 'reason', existing_type=sa.Text(), nullable=False)
    op.drop_index(op.f('ix_erasure_requests_keys_destroyed_at'), table_name='erasure_requests')
    op.drop_column('erasure_requests', 'keys_destroyed_at')
    op.drop_column('erasure_requests', 'key_id')
    op.drop_column('erasure_requests', 'reason_encrypted')
