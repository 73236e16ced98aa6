"""trial rungs

Rung scores of trials (held-out scores at fractions of their training) and the
early-stopping rule's decision on each: one row per trial and rung.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 17:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'trial_rungs',
        sa.Column('trial_id', sa.Integer(), nullable=False),
        sa.Column('rung', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('lease_token', sa.String(64), nullable=False),
        sa.Column('step', sa.BigInteger(), nullable=False),
        sa.Column('score', sa.Float(), nullable=False),
        sa.Column('share', sa.Float(), nullable=True),
        sa.Column('examples', sa.BigInteger(), nullable=False),
        sa.Column('eval_seconds', sa.Float(), nullable=False),
        sa.Column('proceed', sa.Boolean(), nullable=True),
        sa.Column('decision', sa.Text(), nullable=True),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['trial_id'], ['trials.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('trial_id', 'rung'),
    )
    op.create_index('ix_trial_rungs_study_rung', 'trial_rungs', ['study_id', 'rung'])


def downgrade() -> None:
    op.drop_index('ix_trial_rungs_study_rung', table_name='trial_rungs')
    op.drop_table('trial_rungs')
