"""trial artefacts

Where a completed trial's uploaded adapter artefact stands: its SHA-256 (checked on
arrival), its size, and when it arrived. The bytes live in the server's artefact store
(``AUTOPEFT_ARTIFACT_DIR``), keyed by trial id; a row without a hash has no artefact.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('trials') as batch:
        batch.add_column(sa.Column('artifact_sha256', sa.String(64), nullable=True))
        batch.add_column(sa.Column('artifact_bytes', sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column('artifact_at', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('trials') as batch:
        batch.drop_column('artifact_at')
        batch.drop_column('artifact_bytes')
        batch.drop_column('artifact_sha256')
