"""a model warm start's report

``studies.transfer`` holds what a warm-started study's model learnt of its sources at its
last proposal: the task correlation per source study and whether the negative-transfer
guard kept the sources (issue 32).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 03:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('studies') as batch:
        batch.add_column(sa.Column('transfer', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('studies') as batch:
        batch.drop_column('transfer')
