"""PostgreSQL: the customers' JSON documents (users.attributes and .metrics; endpoint.attributes, .metrics,
.demographic and .location) become `jsonb`. As `json` they are text that every `->` parses again: the
segment engine's direct evaluation and backfill read five paths of each row through a dozen `->` each
(18x a plain `->>` scan at 100,000 customers); `jsonb` is parsed once, on write. SQLite keeps its JSON text
(its json_extract reads the text without building a tree). Events stay `json`: written far more often
than read by path.

jsonb does not keep key order, duplicate keys or a number's spelling (1e2 reads back as 100): documents
are maps of names to values, read back as such."""
from alembic import op

revision = "0018_pgfast_customer_jsonb"
down_revision = "0017_workspace_ids"
branch_labels = None
depends_on = None

COLUMNS = {"users": ("attributes", "metrics"), "endpoint": ("attributes", "metrics", "demographic", "location")}


def _retype(to: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in COLUMNS.items():
        changes = ", ".join(f"ALTER COLUMN {c} TYPE {to} USING {c}::{to}" for c in columns)
        op.execute(f"ALTER TABLE {table} {changes}")


def upgrade() -> None:
    _retype("jsonb")


def downgrade() -> None:
    _retype("json")
