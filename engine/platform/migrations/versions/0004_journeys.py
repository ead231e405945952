"""journeys runtime: journeys, versions, runs, cohorts, triggers and the entry queue"""
from alembic import op
import sqlalchemy as sa


revision = "0004_journeys"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journey",
        sa.Column("workspace_id", sa.Integer(), sa.ForeignKey("workspace.id"), primary_key=True),
        sa.Column("journey_id", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("active_version", sa.Integer(), nullable=True),
        sa.Column("next_cohort", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "journey_version",
        sa.Column("workspace_id", sa.Integer(), primary_key=True),
        sa.Column("journey_id", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("yaml", sa.Text(), nullable=False),
        sa.Column("ir", sa.Text(), nullable=False),
        sa.Column("source_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "journey_run",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("journey_id", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("cohort", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("current_step", sa.String(100), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("exit_reason", sa.String(255), nullable=True),
        sa.Column("entered_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("converted_at", sa.BigInteger(), nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("variant", sa.String(100), nullable=True),
        sa.Column("entry", sa.JSON(), nullable=False),
    )
    op.create_index("ix_journey_run_user", "journey_run", ["workspace_id", "journey_id", "user_pk"])
    op.create_index("ix_journey_run_cohort", "journey_run", ["workspace_id", "journey_id", "cohort"])
    op.create_table(
        "journey_cohort",
        sa.Column("workspace_id", sa.Integer(), primary_key=True),
        sa.Column("journey_id", sa.String(100), primary_key=True),
        sa.Column("cohort", sa.Integer(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("claim_key", sa.String(255), nullable=False),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("claim_key", name="uq_journey_cohort_claim"),
    )
    op.create_table(
        "journey_trigger",
        sa.Column("workspace_id", sa.Integer(), primary_key=True),
        sa.Column("event_name", sa.String(255), primary_key=True),
        sa.Column("journey_id", sa.String(100), primary_key=True),
        sa.Column("role", sa.String(8), primary_key=True),
        sa.Column("segment_id", sa.String(100), nullable=True),
        sa.Column("within_ms", sa.BigInteger(), nullable=True),
    )
    op.create_table(
        "journey_entry",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("journey_id", sa.String(100), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.Column("enqueued_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_journey_entry_journey", "journey_entry", ["workspace_id", "journey_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_journey_entry_journey", "journey_entry")
    op.drop_table("journey_entry")
    op.drop_table("journey_trigger")
    op.drop_table("journey_cohort")
    op.drop_index("ix_journey_run_cohort", "journey_run")
    op.drop_index("ix_journey_run_user", "journey_run")
    op.drop_table("journey_run")
    op.drop_table("journey_version")
    op.drop_table("journey")
