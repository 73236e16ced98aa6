"""trial fidelity and checkpoints

A study with a fidelity axis (``domain.fidelity``): each trial's target fidelity, its
checkpoint (hash, size, step) when it paused below full training, and one observation per
fidelity level it reached (score, cost).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('trials') as batch:
        batch.add_column(sa.Column('fidelity', sa.Float(), nullable=True))
        batch.add_column(sa.Column('checkpoint_sha256', sa.String(64), nullable=True))
        batch.add_column(sa.Column('checkpoint_bytes', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('checkpoint_step', sa.BigInteger(), nullable=True))
    op.create_table(
        'trial_observations',
        sa.Column('trial_id', sa.Integer(), nullable=False),
        sa.Column('fidelity', sa.Float(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('lease_token', sa.String(64), nullable=False),
        sa.Column('score', sa.Float(), nullable=False),
        sa.Column('dev_score', sa.Float(), nullable=True),
        sa.Column('share', sa.Float(), nullable=True),
        sa.Column('step', sa.BigInteger(), nullable=False),
        sa.Column('cost_seconds', sa.Float(), nullable=False),
        sa.Column('worker', sa.String(200), nullable=True),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['trial_id'], ['trials.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('trial_id', 'fidelity'),
    )
    op.create_index('ix_trial_observations_study', 'trial_observations', ['study_id'])


def downgrade() -> None:
    op.drop_index('ix_trial_observations_study', table_name='trial_observations')
    op.drop_table('trial_observations')
    with op.batch_alter_table('trials') as batch:
        batch.drop_column('checkpoint_step')
        batch.drop_column('checkpoint_bytes')
        batch.drop_column('checkpoint_sha256')
        batch.drop_column('fidelity')
