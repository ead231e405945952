"""Template versions (every version of a template, the row keeping the active one), resource tags and
Pinpoint applications' event streams (api/pinpoint/templates.py, tags.py, event_stream.py). Existing
templates get their current document as their one stored version."""
import sqlalchemy as sa
from alembic import op

revision = "0016_pinpoint_templates"
down_revision = "0015_journey_report"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_template_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("workspace_id", sa.Integer(), sa.ForeignKey("workspace.id"), nullable=False),
        sa.Column("template_id", sa.String(length=255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("doc", sa.JSON(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("workspace_id", "template_id", "version", name="uq_message_template_version"),
    )
    op.execute("INSERT INTO message_template_version (workspace_id, template_id, version, doc, created_at, updated_at) "
               "SELECT workspace_id, template_id, version, doc, updated_at, updated_at FROM message_template")
    op.create_table(
        "resource_tag",
        sa.Column("workspace_id", sa.Integer(), sa.ForeignKey("workspace.id"), primary_key=True),
        sa.Column("resource", sa.String(length=400), primary_key=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "pinpoint_event_stream",
        sa.Column("workspace_id", sa.Integer(), sa.ForeignKey("workspace.id"), primary_key=True),
        sa.Column("stream_pk", sa.Integer(), sa.ForeignKey("event_stream.id"), nullable=False),
        sa.Column("destination_arn", sa.String(length=600), nullable=False),
        sa.Column("role_arn", sa.String(length=600), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pinpoint_event_stream")
    op.drop_table("resource_tag")
    op.drop_table("message_template_version")
