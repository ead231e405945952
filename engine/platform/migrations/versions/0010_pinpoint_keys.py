"""access keys of the Pinpoint-compatible API (api/pinpoint): an access key id and its SigV4 secret, sealed
with the channel-secret encryption keys (tidings.engine.channels.secrets); an admin key has no workspace."""
import sqlalchemy as sa
from alembic import op

revision = "0010_pinpoint_keys"
down_revision = "0009_installation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_key",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("workspace_id", sa.Integer(), sa.ForeignKey("workspace.id"), nullable=True),
        sa.Column("access_key_id", sa.String(length=32), nullable=False),
        sa.Column("sealed_secret", sa.Text(), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("access_key_id", name="uq_access_key_access_key_id"),
    )
    op.create_index("ix_access_key_workspace_id", "access_key", ["workspace_id"])


def downgrade() -> None:
    op.drop_index("ix_access_key_workspace_id", table_name="access_key")
    op.drop_table("access_key")
