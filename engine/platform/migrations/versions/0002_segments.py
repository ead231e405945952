"""segments: definitions, versions, memberships, typed customer values (indexed paths), import jobs, journey refs"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002_segments'
down_revision = '0001_foundation'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('customer_value',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('user_pk', sa.Integer(), nullable=False),
    sa.Column('ep', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=120), nullable=False),
    sa.Column('kind', sa.String(length=1), nullable=False),
    sa.Column('txt', sa.Text(), nullable=True),
    sa.Column('num', sa.Float(precision=53), nullable=True),
    sa.Column('ts', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('customer_value', schema=None) as batch_op:
        batch_op.create_index('ix_cv_path_num', ['workspace_id', 'path', 'kind', 'num', 'ep', 'user_pk'], unique=False)
        batch_op.create_index('ix_cv_path_txt', ['workspace_id', 'path', 'kind', 'txt', 'ep', 'user_pk'], unique=False)
        batch_op.create_index('ix_cv_user', ['user_pk', 'path', 'ep', 'kind', 'num', 'txt', 'ts'], unique=False)

    op.create_table('indexed_path',
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=1), nullable=False),
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('slot', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('workspace_id', 'scope', 'path')
    )
    op.create_table('import_job',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('segment_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('rows_done', sa.Integer(), nullable=False),
    sa.Column('rows_total', sa.Integer(), nullable=True),
    sa.Column('errors', sa.JSON(), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('finished_at', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('import_job', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_import_job_workspace_id'), ['workspace_id'], unique=False)

    op.create_table('journey_segment_ref',
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('journey_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('segment_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'journey_id', 'segment_id')
    )
    op.create_table('segment_member',
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('segment_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('user_pk', sa.Integer(), nullable=False),
    sa.Column('since', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'segment_id', 'user_pk'),
    sqlite_with_rowid=False,
    )
    with op.batch_alter_table('segment_member', schema=None) as batch_op:
        batch_op.create_index('ix_segment_member_user', ['workspace_id', 'user_pk'], unique=False)

    op.create_table('segment_version',
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('segment_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('rule', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'segment_id', 'version')
    )
    op.create_table('static_member',
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('segment_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('user_pk', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('workspace_id', 'segment_id', 'user_pk')
    )
    with op.batch_alter_table('static_member', schema=None) as batch_op:
        batch_op.create_index('ix_static_member_user', ['workspace_id', 'user_pk'], unique=False)

    op.create_table('segment',
    sa.Column('workspace_id', sa.Integer(), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('rule', sa.JSON(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ),
    sa.PrimaryKeyConstraint('workspace_id', 'id')
    )


def downgrade() -> None:
    op.drop_table('segment')
    with op.batch_alter_table('static_member', schema=None) as batch_op:
        batch_op.drop_index('ix_static_member_user')

    op.drop_table('static_member')
    op.drop_table('segment_version')
    with op.batch_alter_table('segment_member', schema=None) as batch_op:
        batch_op.drop_index('ix_segment_member_user')

    op.drop_table('segment_member')
    op.drop_table('journey_segment_ref')
    with op.batch_alter_table('import_job', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_import_job_workspace_id'))

    op.drop_table('import_job')
    op.drop_table('indexed_path')
    with op.batch_alter_table('customer_value', schema=None) as batch_op:
        batch_op.drop_index('ix_cv_user')
        batch_op.drop_index('ix_cv_path_txt')
        batch_op.drop_index('ix_cv_path_num')

    op.drop_table('customer_value')
