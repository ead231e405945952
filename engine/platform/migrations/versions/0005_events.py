"""events: message index, tracking secrets, feedback settings, event streams, dead letters"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0005_events"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_ref",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("provider_message_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("endpoint_pk", sa.Integer(), nullable=True),
        sa.Column("identity", sa.JSON(), nullable=False),
        sa.Column("sent_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "message_id", name="uq_message_ref_message"),
    )
    op.create_index("ix_message_ref_provider", "message_ref", ["workspace_id", "provider_message_id"])
    op.create_table(
        "tracking_secret",
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("secret", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"]),
        sa.PrimaryKeyConstraint("workspace_id"),
    )
    op.create_table(
        "feedback_setting",
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("secret", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"]),
        sa.PrimaryKeyConstraint("workspace_id", "channel"),
    )
    op.create_table(
        "event_stream",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("stream_id", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=False),
        sa.Column("format", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.Column("lease_owner", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("lease_until", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "stream_id", name="uq_event_stream_workspace_stream"),
    )
    op.create_table(
        "event_dead_letter",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("stream_pk", sa.Integer(), nullable=False),
        sa.Column("first_event_pk", sa.BigInteger(), nullable=False),
        sa.Column("last_event_pk", sa.BigInteger(), nullable=False),
        sa.Column("records", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"]),
        sa.ForeignKeyConstraint(["stream_pk"], ["event_stream.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_event_dead_letter_stream", "event_dead_letter", ["stream_pk", "id"])
    # Metrics are GROUP BYs over message events of one workspace by name and time.
    op.create_index("ix_event_workspace_name_ts", "event", ["workspace_id", "name", "ts"])


def downgrade() -> None:
    op.drop_index("ix_event_workspace_name_ts", table_name="event")
    op.drop_index("ix_event_dead_letter_stream", table_name="event_dead_letter")
    op.drop_table("event_dead_letter")
    op.drop_table("event_stream")
    op.drop_table("feedback_setting")
    op.drop_table("tracking_secret")
    op.drop_index("ix_message_ref_provider", table_name="message_ref")
    op.drop_table("message_ref")
