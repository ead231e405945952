"""journey_step_tally on PostgreSQL: each writer counts into a shard of its own, its backend pid (was pid % 16).

Two writers whose pids shared a shard took the same tally rows in different orders (a run's steps are
aggregated by hash, and one transaction updates many runs with different step sets), and PostgreSQL aborted
one of them as a deadlock. A backend runs one transaction at a time, so with the whole pid as the shard no two
concurrent transactions ever write the same tally row: they cannot wait on each other at all. The shards of
backends that have gone are folded into shard 0 by tidings.engine.journeys.counts.fold_step_tally (the daily
retention run calls it), so the rows stay few. SQLite has one writer at a time and one shard (0): only the
column's declared type follows."""
import sqlalchemy as sa
from alembic import op

revision = "0021_step_tally_writer_shards"
down_revision = "0020_pagefast_step_tally"
branch_labels = None
depends_on = None

_KEY = "workspace_id, journey_id, version, kind, step, outcome"


def _previous():
    from importlib import import_module
    return import_module("tidings.engine.platform.migrations.versions.0020_pagefast_step_tally")


def _count_function(shard: str) -> str:
    """The PostgreSQL trigger function of 0020, with another shard expression."""
    sql = _previous()._run_count_sql
    return ("CREATE OR REPLACE FUNCTION tidings_journey_step_tally() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF TG_OP IN ('UPDATE', 'DELETE') THEN {sql(False, 'OLD', -1, shard)}; END IF; "
            f"IF TG_OP IN ('INSERT', 'UPDATE') THEN {sql(False, 'NEW', 1, shard)}; END IF; "
            "RETURN NULL; END $$")


def _sqlite_shard_type(to: sa.types.TypeEngine, was: sa.types.TypeEngine) -> None:
    """SQLite rebuilds the table to change a column's type; journey_run's triggers name the table, and SQLite
    refuses to rename a table into place while a trigger names one that is missing: they go and come back."""
    triggers = {name: sql for name, sql in op.get_bind().exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'tr_journey_run_tally_%'")}
    for name in triggers:
        op.execute(f"DROP TRIGGER {name}")
    with op.batch_alter_table("journey_step_tally") as table:
        table.alter_column("shard", type_=to, existing_type=was, existing_nullable=False)
    for sql in triggers.values():
        op.execute(sql)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_shard_type(sa.Integer(), sa.SmallInteger())
        return
    op.execute("ALTER TABLE journey_step_tally ALTER COLUMN shard TYPE integer")
    op.execute(_count_function("pg_backend_pid()"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_shard_type(sa.SmallInteger(), sa.Integer())
        return
    op.execute("LOCK TABLE journey_step_tally IN EXCLUSIVE MODE")
    op.execute(f"CREATE TEMP TABLE folded_step_tally AS SELECT {_KEY}, sum(runs) AS runs FROM journey_step_tally "
               f"GROUP BY {_KEY}")
    op.execute("DELETE FROM journey_step_tally")
    op.execute("ALTER TABLE journey_step_tally ALTER COLUMN shard TYPE smallint")
    op.execute(f"INSERT INTO journey_step_tally ({_KEY}, shard, runs) SELECT {_KEY}, 0, runs FROM folded_step_tally")
    op.execute("DROP TABLE folded_step_tally")
    op.execute(_count_function("pg_backend_pid() % 16"))
