"""study reason and proposer backoff

Why a study ended early (``reason``), and the proposer's record of a study whose optimiser
keeps failing (consecutive failures, when to try again), so that one failing study is
retried with backoff instead of on every pass, across restarts and leader changes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('studies') as batch:
        batch.add_column(sa.Column('reason', sa.Text(), nullable=True))
        batch.add_column(sa.Column('proposer_failures', sa.Integer(), nullable=False,
                                   server_default='0'))
        batch.add_column(sa.Column('proposer_retry_at', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('studies') as batch:
        batch.drop_column('proposer_retry_at')
        batch.drop_column('proposer_failures')
        batch.drop_column('reason')
