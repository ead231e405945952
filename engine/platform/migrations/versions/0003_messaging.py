"""messaging: channel configuration, templates, messages, outbox, idempotent requests, rate buckets"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0003_messaging"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rate_bucket',
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('tokens', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'channel')
    )
    op.create_table('channel_config',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('rate_limit', sa.Float(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('workspace_id', 'name', name='uq_channel_config_workspace_name')
    )
    op.create_table('channel_route',
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('channel_type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ),
    sa.PrimaryKeyConstraint('workspace_id', 'channel_type')
    )
    op.create_table('idempotent_request',
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('body_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('answer', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ),
    sa.PrimaryKeyConstraint('workspace_id', 'key')
    )
    op.create_table('message',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('message_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('idempotency_key', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('endpoint', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('user_pk', sa.Integer(), nullable=True),
    sa.Column('endpoint_pk', sa.Integer(), nullable=True),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('channel_type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('address', sqlmodel.sql.sqltypes.AutoString(length=4096), nullable=False),
    sa.Column('template_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('journey_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('journey_version', sa.Integer(), nullable=True),
    sa.Column('step_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('variant', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('transactional', sa.Boolean(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('permanent', sa.Boolean(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('provider_message_id', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('message_id'),
    sa.UniqueConstraint('workspace_id', 'idempotency_key', 'endpoint', name='uq_message_idempotency')
    )
    op.create_index('ix_message_workspace_created', 'message', ['workspace_id', 'created_at'], unique=False)
    op.create_table('message_template',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('template_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('channel_type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('doc', sa.JSON(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('workspace_id', 'template_id', name='uq_message_template_workspace_id')
    )
    op.create_table('outbox_message',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('message_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('channel_type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('address', sqlmodel.sql.sqltypes.AutoString(length=4096), nullable=False),
    sa.Column('content', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('message_id')
    )
    op.create_index('ix_outbox_workspace_address', 'outbox_message', ['workspace_id', 'address'], unique=False)


    # Transactional sends to raw addresses look for an endpoint with that address (to honour its opt-out).
    # Addresses may be 4096 characters: PostgreSQL's B-tree refuses entries over ~2.7 kB, a hash index does not.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_endpoint_address ON endpoint USING hash (address)")
    else:
        op.create_index('ix_endpoint_address', 'endpoint', ['address'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_endpoint_address', table_name='endpoint')
    op.drop_index('ix_outbox_workspace_address', table_name='outbox_message')
    op.drop_table('outbox_message')
    op.drop_table('message_template')
    op.drop_index('ix_message_workspace_created', table_name='message')
    op.drop_table('message')
    op.drop_table('idempotent_request')
    op.drop_table('channel_route')
    op.drop_table('channel_config')
    op.drop_table('rate_bucket')
