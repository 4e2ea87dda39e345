"""audit events authenticated (a MAC under a key the database never holds); the runtime role

The role ``lethe_runtime`` (cluster-wide, NOLOGIN; a service's login is made a member of it) may
read and write every table but may only SELECT and INSERT ``audit_events``: no UPDATE, DELETE,
TRUNCATE or TRIGGER, and it owns nothing, so it cannot switch the append-only trigger off.
Migrations keep running as the owner.

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


RUNTIME_ROLE = 'lethe_runtime'
_DML = 'SELECT, INSERT, UPDATE, DELETE'


def upgrade() -> None:
    # Rows written before this revision have no MAC: verification reports them unauthenticated
    # (the database cannot compute one: it never holds the key).
    op.add_column('audit_events', sa.Column('mac', sa.String(length=120), nullable=True))
    op.execute(
        f"DO $$ BEGIN CREATE ROLE {RUNTIME_ROLE} NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    # CREATE: the embedded broker's tables are created at run time (service.queue.broker_tables).
    op.execute(f'GRANT USAGE, CREATE ON SCHEMA public TO {RUNTIME_ROLE}')
    op.execute(f'GRANT {_DML} ON ALL TABLES IN SCHEMA public TO {RUNTIME_ROLE}')
    op.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {RUNTIME_ROLE}')
    op.execute(f'REVOKE ALL ON audit_events, alembic_version FROM {RUNTIME_ROLE}')
    op.execute(f'GRANT SELECT, INSERT ON audit_events TO {RUNTIME_ROLE}')
    op.execute(f'GRANT SELECT ON alembic_version TO {RUNTIME_ROLE}')
    # VACUUM after a purge needs the table's owner (PostgreSQL 16 has no MAINTAIN privilege).
    op.execute(f'ALTER TABLE training_records OWNER TO {RUNTIME_ROLE}')
    # Tables later migrations create (as this same owner) get the same rights.
    op.execute(
        f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {_DML} ON TABLES TO {RUNTIME_ROLE}'
    )
    op.execute(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA public '
        f'GRANT USAGE, SELECT ON SEQUENCES TO {RUNTIME_ROLE}'
    )


def downgrade() -> None:
    op.execute('ALTER TABLE training_records OWNER TO CURRENT_USER')
    op.execute(
        f'ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE {_DML} ON TABLES FROM {RUNTIME_ROLE}'
    )
    op.execute(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA public '
        f'REVOKE USAGE, SELECT ON SEQUENCES FROM {RUNTIME_ROLE}'
    )
    op.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {RUNTIME_ROLE}')
    op.execute(f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {RUNTIME_ROLE}')
    op.execute(f'REVOKE ALL ON SCHEMA public FROM {RUNTIME_ROLE}')
    # The role is cluster-wide (other databases may use it): it stays.
    op.drop_column('audit_events', 'mac')
