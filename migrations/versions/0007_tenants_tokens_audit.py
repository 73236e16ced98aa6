"""tenants (weights, quotas), hashed tokens, study ownership, worker pools, audit log

Every study made before tenancy belongs to the ``default`` tenant (id 1), which the
environment's tokens act for.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 21:00:00
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    tenants = op.create_table(
        'tenants',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('name', sa.String(63), nullable=False),
        sa.Column('weight', sa.Float(), server_default='1', nullable=False),
        sa.Column('max_running_studies', sa.Integer(), nullable=True),
        sa.Column('max_parallel_trials', sa.Integer(), nullable=True),
        sa.Column('max_queued_trials', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.bulk_insert(tenants, [{'id': 1, 'name': 'default', 'weight': 1.0,
                              'created_at': time.time()}])
    if op.get_bind().dialect.name == 'postgresql':  # the explicit id 1 left the sequence at 1
        op.execute("SELECT setval(pg_get_serial_sequence('tenants', 'id'), 1)")
    op.create_table(
        'api_tokens',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('tenant_id', sa.Integer(), nullable=False),
        sa.Column('role', sa.String(20), nullable=False),
        sa.Column('name', sa.String(200), server_default='', nullable=False),
        sa.Column('token_sha256', sa.String(64), nullable=False),
        sa.Column('shared_pool', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=True),
        sa.Column('revoked_at', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_sha256'),
    )
    op.create_index('ix_api_tokens_tenant_id', 'api_tokens', ['tenant_id'])
    op.create_table(
        'audit_log',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('at', sa.Float(), nullable=False),
        sa.Column('tenant_id', sa.Integer(), nullable=False),
        sa.Column('token_id', sa.Integer(), nullable=True),
        sa.Column('actor', sa.String(300), nullable=False),
        sa.Column('action', sa.String(40), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_audit_log_tenant_at', 'audit_log', ['tenant_id', 'at'])
    with op.batch_alter_table('studies') as batch:
        batch.add_column(sa.Column('tenant_id', sa.Integer(), server_default='1',
                                   nullable=False))
        batch.create_foreign_key('fk_studies_tenant_id', 'tenants', ['tenant_id'], ['id'])
        batch.create_index('ix_studies_tenant_id', ['tenant_id'])
    with op.batch_alter_table('workers') as batch:
        batch.add_column(sa.Column('pool_tenant_id', sa.Integer(), nullable=True))
    # the fair share leases a chosen study's oldest ready trial: (study, state, id) in order
    op.drop_index('ix_trials_study_state', table_name='trials')
    op.create_index('ix_trials_study_state_id', 'trials', ['study_id', 'state', 'id'])


def downgrade() -> None:
    op.drop_index('ix_trials_study_state_id', table_name='trials')
    op.create_index('ix_trials_study_state', 'trials', ['study_id', 'state'])
    with op.batch_alter_table('workers') as batch:
        batch.drop_column('pool_tenant_id')
    with op.batch_alter_table('studies') as batch:
        batch.drop_index('ix_studies_tenant_id')
        batch.drop_constraint('fk_studies_tenant_id', type_='foreignkey')
        batch.drop_column('tenant_id')
    op.drop_index('ix_audit_log_tenant_at', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_index('ix_api_tokens_tenant_id', table_name='api_tokens')
    op.drop_table('api_tokens')
    op.drop_table('tenants')
