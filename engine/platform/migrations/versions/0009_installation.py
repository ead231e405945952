"""An installation token (tidings.engine.platform.installation): the prefix of this database's Temporal ids. A
database that already ran journeys gets an empty token, so its running workflows keep their ids."""
import secrets

from alembic import op
import sqlalchemy as sa


revision = "0009_installation"
down_revision = ("0008_delivery_retry", "0004_journeys", "0002_segments")  # also joins the three heads
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table("installation", sa.Column("id", sa.String(length=32), primary_key=True))
    ran_journeys = op.get_bind().execute(sa.text("SELECT 1 FROM journey_cohort LIMIT 1")).first() is not None
    op.bulk_insert(table, [{"id": "" if ran_journeys else secrets.token_hex(6)}])


def downgrade() -> None:
    op.drop_table("installation")
