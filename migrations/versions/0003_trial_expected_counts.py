"""trial expected parameter counts

The server's analytic parameter counts of a trial's configuration (trainable and deployed),
written at proposal when the study knows its backbone's dimensions. A worker's report must
match them: a disagreement (another backbone, another version of a method) fails the trial
instead of storing a share the optimiser did not plan for.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('trials') as batch:
        batch.add_column(sa.Column('expected_trainable', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('expected_deployed', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('trials') as batch:
        batch.drop_column('expected_deployed')
        batch.drop_column('expected_trainable')
