"""The journey report (tidings.engine.analytics.journey_report): journey_cohort.refused counts the entries
admission turned away, by reason."""
import sqlalchemy as sa
from alembic import op

revision = "0015_journey_report"
down_revision = "0014_index_fill"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("journey_cohort") as batch:
        batch.add_column(sa.Column("refused", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("journey_cohort") as batch:
        batch.drop_column("refused")
