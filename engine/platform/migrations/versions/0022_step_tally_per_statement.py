"""journey_step_tally on PostgreSQL: counted once per statement, into shards of the writing backend.

0020 counted each run from a row trigger into the shard `pg_backend_pid() % 16`. Two faults, both fixed here:
- two writers whose pids shared a shard took the same tally rows in different orders (a run's steps are
  aggregated by hash, and one transaction updates many runs with different step sets), and PostgreSQL aborted
  one as a deadlock. The shard is now the backend's own (pid * 16 + a random sub-shard): a backend runs one
  transaction at a time, so no two concurrent transactions ever write one tally row and they cannot wait on
  each other at all;
- a statement writing many runs of one journey (a broadcast's admission, stopping a journey, a retention
  batch) updated the same tally row once per run, and every update in one transaction leaves a row version
  the next must walk past: quadratic (20,000 runs: 10 s to insert, 52 s to stop). Statement triggers with
  transition tables now count a whole statement's runs in one upsert per tally row; the random sub-shard
  spreads the row-at-a-time statements of one transaction (a cohort step's updates) over 16 rows.
The shards of backends that have gone are folded into shard 0 by tidings.engine.journeys.counts.fold_step_tally
(the daily retention run calls it), so the rows stay few. SQLite has one writer at a time, updates in place
and keeps its row triggers and one shard (0): only the column's declared type follows."""
import sqlalchemy as sa
from alembic import op

revision = "0022_step_tally_per_statement"
down_revision = "0021_tally_message_keys"
branch_labels = None
depends_on = None

KEY = "workspace_id, journey_id, version, kind, step, outcome"
SHARD = "pg_backend_pid() * 16 + floor(random() * 16)::int"
# what the tally counts of a run; an UPDATE that changes none of it counts nothing
COUNTED = ("steps", "status", "current_step", "version", "journey_id", "workspace_id")


def _previous():
    from importlib import import_module
    return import_module("tidings.engine.platform.migrations.versions.0020_pagefast_step_tally")


def _counts(source: str, sign: int) -> str:
    """The tally rows (key columns, n) of the runs `source` (a FROM item aliased r), each counted `sign` times:
    every step a run took once (entered), each step's outcome as often as recorded, its current step as
    waiting (active) or ended; the same as 0020's per-run SQL."""
    p = _previous()._run_parts(False)
    p = {k: v.format(r="r") for k, v in p.items()}
    return (f"SELECT r.workspace_id, r.journey_id, r.version, 'entered' AS kind, t.step, '' AS outcome, {sign} AS n "
            f"FROM {source}, LATERAL (SELECT DISTINCT {p['step']} AS step FROM {p['elements']} "
            f"WHERE {p['is_step']}) t UNION ALL "
            f"SELECT r.workspace_id, r.journey_id, r.version, 'outcome', {p['step']}, {p['outcome']}, {sign} "
            f"FROM {source}, {p['elements']} WHERE {p['is_step']} AND {p['is_outcome']} UNION ALL "
            f"SELECT r.workspace_id, r.journey_id, r.version, CASE WHEN r.status = 'active' THEN 'waiting' "
            f"ELSE 'ended' END, r.current_step, '', {sign} FROM {source} WHERE coalesce(r.current_step, '') <> ''")


def _upsert(parts: list[str]) -> str:
    return (f"INSERT INTO journey_step_tally ({KEY}, shard, runs) SELECT {KEY}, {SHARD}, sum(n) FROM ("
            + " UNION ALL ".join(parts) + f") c GROUP BY {KEY} HAVING sum(n) <> 0 "
            f"ON CONFLICT ({KEY}, shard) DO UPDATE SET runs = journey_step_tally.runs + excluded.runs")


def _statement_function() -> str:
    changed = " OR ".join(
        f"o.{c}::text IS DISTINCT FROM n.{c}::text" if c == "steps" else f"o.{c} IS DISTINCT FROM n.{c}"
        for c in COUNTED)
    moved_out = f"(SELECT o.* FROM old_runs o JOIN new_runs n ON n.id = o.id WHERE {changed}) r"
    moved_in = f"(SELECT n.* FROM new_runs n JOIN old_runs o ON o.id = n.id WHERE {changed}) r"
    return ("CREATE OR REPLACE FUNCTION tidings_journey_step_tally_statement() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN "
            f"IF TG_OP = 'INSERT' THEN {_upsert([_counts('new_runs r', 1)])}; "
            f"ELSIF TG_OP = 'DELETE' THEN {_upsert([_counts('old_runs r', -1)])}; "
            f"ELSE {_upsert([_counts(moved_out, -1), _counts(moved_in, 1)])}; END IF; "
            "RETURN NULL; END $$")


def _statement_triggers() -> list[str]:
    each = "FOR EACH STATEMENT EXECUTE FUNCTION tidings_journey_step_tally_statement()"
    return ["CREATE TRIGGER tr_journey_run_tally_insert AFTER INSERT ON journey_run "
            f"REFERENCING NEW TABLE AS new_runs {each}",
            "CREATE TRIGGER tr_journey_run_tally_update AFTER UPDATE ON journey_run "
            f"REFERENCING OLD TABLE AS old_runs NEW TABLE AS new_runs {each}",
            "CREATE TRIGGER tr_journey_run_tally_delete AFTER DELETE ON journey_run "
            f"REFERENCING OLD TABLE AS old_runs {each}"]


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
    op.execute("LOCK TABLE journey_run IN SHARE ROW EXCLUSIVE MODE")  # no run written between the two triggers
    op.execute("DROP TRIGGER tr_journey_run_tally ON journey_run")
    op.execute("DROP FUNCTION tidings_journey_step_tally()")
    op.execute("ALTER TABLE journey_step_tally ALTER COLUMN shard TYPE integer")
    op.execute(_statement_function())
    for sql in _statement_triggers():
        op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_shard_type(sa.SmallInteger(), sa.Integer())
        return
    op.execute("LOCK TABLE journey_run IN SHARE ROW EXCLUSIVE MODE")
    for name in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER tr_journey_run_tally_{name} ON journey_run")
    op.execute("DROP FUNCTION tidings_journey_step_tally_statement()")
    op.execute(f"CREATE TEMP TABLE folded_step_tally AS SELECT {KEY}, sum(runs) AS runs FROM journey_step_tally "
               f"GROUP BY {KEY}")
    op.execute("DELETE FROM journey_step_tally")
    op.execute("ALTER TABLE journey_step_tally ALTER COLUMN shard TYPE smallint")
    op.execute(f"INSERT INTO journey_step_tally ({KEY}, shard, runs) SELECT {KEY}, 0, runs FROM folded_step_tally "
               "WHERE runs <> 0")
    op.execute("DROP TABLE folded_step_tally")
    sql, shard = _previous()._run_count_sql, "pg_backend_pid() % 16"
    op.execute("CREATE FUNCTION tidings_journey_step_tally() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
               f"IF TG_OP IN ('UPDATE', 'DELETE') THEN {sql(False, 'OLD', -1, shard)}; END IF; "
               f"IF TG_OP IN ('INSERT', 'UPDATE') THEN {sql(False, 'NEW', 1, shard)}; END IF; "
               "RETURN NULL; END $$")
    op.execute("CREATE TRIGGER tr_journey_run_tally AFTER INSERT OR DELETE OR UPDATE OF "
               "steps, status, current_step, version, journey_id, workspace_id ON journey_run "
               "FOR EACH ROW EXECUTE FUNCTION tidings_journey_step_tally()")
