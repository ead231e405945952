"""messages keep being retried after a transient failure (tidings.engine.messaging.dispatch): `retrying` rows carry their next
attempt time and, for the redelivery loop, the rendered message; `owner` is the send attempt that may hand
a row to its provider (a retried attempt takes its rows over; an older one still running stops)."""
from alembic import op
import sqlalchemy as sa


revision = "0008_delivery_retry"
down_revision = "0007_channel_secrets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("next_attempt_at", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("owner", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("content", sa.JSON(), nullable=True))
    op.create_index("ix_message_retry_due", "message", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_message_retry_due", table_name="message")
    with op.batch_alter_table("message") as batch:
        batch.drop_column("content")
        batch.drop_column("owner")
        batch.drop_column("next_attempt_at")
