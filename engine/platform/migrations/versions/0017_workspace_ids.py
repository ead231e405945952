"""Workspace ids are never reused. On SQLite an INTEGER PRIMARY KEY without AUTOINCREMENT hands out
max(id) + 1, so the workspace created after the newest one is deleted (DeleteApp) got its number back; Temporal
workflow ids carry that number (journey/<workspace id>/<journey id>), and a recreated journey then collided with
the deleted workspace's finished workflows (REJECT_DUPLICATE). The table is rebuilt with AUTOINCREMENT, rows and
the other tables' foreign keys kept (tidings.engine.platform.db.migrate turns SQLite's foreign key enforcement off
around the migrations and checks every key before committing). PostgreSQL's SERIAL sequence never hands a
number out twice already: nothing to do there."""
from alembic import op

revision = "0017_workspace_ids"
down_revision = "0016_pinpoint_templates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # The copy inserts the existing ids, so sqlite_sequence starts at the highest one still present.
    with op.batch_alter_table("workspace", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("workspace", recreate="always", table_kwargs={"sqlite_autoincrement": False}):
        pass
