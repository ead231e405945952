"""channel secrets are sealed at rest (tidings.engine.channels.secrets): a sealed feedback secret is longer than the
255 characters the plain one was limited to. Stored plain values stay readable and are sealed at start-up."""
from alembic import op
import sqlalchemy as sa


revision = "0007_channel_secrets"
down_revision = "0006_channel_feedback"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("channel_config") as batch:
        batch.alter_column("feedback_secret", type_=sa.Text(), existing_type=sa.String(length=255),
                           existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("channel_config") as batch:
        batch.alter_column("feedback_secret", type_=sa.String(length=255), existing_type=sa.Text(),
                           existing_nullable=True)
