"""import and export jobs of the Pinpoint-compatible API (api/pinpoint/jobs.py): one row per job, written
with its outcome."""
import sqlalchemy as sa
from alembic import op

revision = "0012_pinpoint_jobs"
down_revision = "0011_retention"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pinpoint_job",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("segment_id", sa.String(length=100), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("failures", sa.JSON(), nullable=False),
        sa.Column("total_failures", sa.Integer(), nullable=False),
        sa.Column("total_processed", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("completed_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_pinpoint_job_workspace_id", "pinpoint_job", ["workspace_id"])


def downgrade() -> None:
    op.drop_index("ix_pinpoint_job_workspace_id", table_name="pinpoint_job")
    op.drop_table("pinpoint_job")
