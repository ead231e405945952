"""indexed_path.filled_to: the watermark of a path's set-based backfill (tidings.engine.segments.backfill).
NULL: the typed index holds the path for every customer; a number: customers up to that user pk are filled
(writes index their own rows whatever their pk), the rest is still being filled outside any saving transaction."""
import sqlalchemy as sa
from alembic import op

revision = "0014_index_fill"
down_revision = "0012_pinpoint_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("indexed_path") as batch:
        batch.add_column(sa.Column("filled_to", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("indexed_path") as batch:
        batch.drop_column("filled_to")
