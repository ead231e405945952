"""channel feedback: provider callbacks are verified with the channel's own config; the generic format's
shared secret moves to channel_config.feedback_secret and feedback_setting goes away"""
from alembic import op
import sqlalchemy as sa


revision = "0006_channel_feedback"
down_revision = ("0003_messaging", "0005_events")
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("channel_config", sa.Column("feedback_secret", sa.String(length=255), nullable=True))
    op.execute(
        "UPDATE channel_config SET feedback_secret = (SELECT f.secret FROM feedback_setting f "
        "WHERE f.workspace_id = channel_config.workspace_id AND f.channel = channel_config.name)"
    )
    op.drop_table("feedback_setting")


def downgrade() -> None:
    op.create_table(
        "feedback_setting",
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(length=255), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspace.id"]),
        sa.PrimaryKeyConstraint("workspace_id", "channel"),
    )
    with op.batch_alter_table("channel_config") as batch:
        batch.drop_column("feedback_secret")
