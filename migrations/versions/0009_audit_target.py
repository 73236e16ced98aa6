"""audit of admin changes

The audit log also records changes to tenants and tokens (who created a tenant, changed
its weight or quotas, created or revoked a token): ``target`` names what was changed,
since those actions have no study.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 00:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_log') as batch:
        batch.add_column(sa.Column('target', sa.String(300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('audit_log') as batch:
        batch.drop_column('target')
