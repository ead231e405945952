"""Per-workspace retention: days to keep raw events, message events and finished journey runs
(tidings.engine.ops.retention; NULL means the default)."""
from alembic import op
import sqlalchemy as sa


revision = "0011_retention"
down_revision = "0010_pinpoint_keys"
branch_labels = None
depends_on = ("0004_journeys",)  # the index is on journey_run


def upgrade() -> None:
    op.create_table(
        "workspace_retention",
        sa.Column("workspace_id", sa.Integer(), sa.ForeignKey("workspace.id"), primary_key=True),
        sa.Column("events_days", sa.Integer(), nullable=True),
        sa.Column("message_events_days", sa.Integer(), nullable=True),
        sa.Column("journey_runs_days", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
    )
    # finished runs are pruned by age: find them without scanning every run
    op.create_index("ix_journey_run_status_updated", "journey_run", ["workspace_id", "status", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_journey_run_status_updated", table_name="journey_run")
    op.drop_table("workspace_retention")
