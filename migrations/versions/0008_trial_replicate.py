"""trial replicates

A replicate trains a configuration the study already has again, with another seed (the
study's seed plus the replicate number), so the model of a noisy score sees repeated
draws at one point and learns the noise from them (``optimizers.multi_fidelity``).
``replicate`` is 0 for a configuration's first trial, 1 for its first replicate, ...

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 00:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('trials') as batch:
        batch.add_column(sa.Column('replicate', sa.Integer(), nullable=False,
                                   server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('trials') as batch:
        batch.drop_column('replicate')
