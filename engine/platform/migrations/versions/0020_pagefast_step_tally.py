"""journey_step_tally (tidings.engine.journeys.tables.JourneyStepTally): what step_counts counts from the
runs' steps (entered, waiting, ended, outcomes per step and version), kept by triggers on journey_run in the
writing transaction and filled here from the runs there are, so the journey page reads a few rows instead of
decoding every run's steps (tests/benchmarks/README.md, "Journey page: step counts kept at write time").
On PostgreSQL each writer counts into its own shard of the rows (backend pid % 16), so concurrent writers
of one journey rarely queue on one row until they commit; only the sum over shards means anything."""
import sqlalchemy as sa
from alembic import op

revision = "0020_pagefast_step_tally"
down_revision = "0019_consolescale_message_facts"
branch_labels = None
depends_on = None

SHARDS = 16


# ---- journey_step_tally: what step_counts counts from the runs' steps (tidings.engine.journeys.counts) ----
STEP_KEY = "workspace_id, journey_id, version, kind, step, outcome, shard"


def _run_parts(sqlite: bool) -> dict[str, str]:
    """The run's steps taken as SQL: `elements` (a FROM item over the `steps` array of `{r}`, aliased e),
    `step` and `outcome` of an element, and the conditions that it names a step / an outcome (a non-empty
    string, as the runtime writes them)."""
    if sqlite:
        return {"elements": "json_each(CASE WHEN json_type({r}.steps) = 'array' THEN {r}.steps ELSE '[]' END) e",
                "step": "json_extract(e.value, '$.step')", "outcome": "json_extract(e.value, '$.outcome')",
                "is_step": "e.type = 'object' AND json_type(e.value, '$.step') = 'text' "
                           "AND json_extract(e.value, '$.step') <> ''",
                "is_outcome": "json_type(e.value, '$.outcome') = 'text' AND json_extract(e.value, '$.outcome') <> ''"}
    return {"elements": "json_array_elements(CASE WHEN json_typeof({r}.steps) = 'array' THEN {r}.steps "
                        "ELSE '[]'::json END) e",
            "step": "(e ->> 'step')", "outcome": "(e ->> 'outcome')",
            "is_step": "json_typeof(e) = 'object' AND json_typeof(e -> 'step') = 'string' AND e ->> 'step' <> ''",
            "is_outcome": "json_typeof(e -> 'outcome') = 'string' AND e ->> 'outcome' <> ''"}


def _run_count_sql(sqlite: bool, row: str, sign: int, shard: str) -> str:
    """Count the run `row` into (sign 1) or out of (-1) the step tally: each step it took once (entered),
    each step's outcome as often as recorded, and its current step as waiting (active) or ended."""
    p = {k: v.format(r=row) for k, v in _run_parts(sqlite).items()}
    current = "CASE WHEN {r}.status = 'active' THEN 'waiting' ELSE 'ended' END".format(r=row)
    return (f"INSERT INTO journey_step_tally ({STEP_KEY}, runs) SELECT {row}.workspace_id, {row}.journey_id, "
            f"{row}.version, k.kind, k.step, k.outcome, {shard}, {sign} * k.n FROM ("
            f"SELECT 'entered' AS kind, {p['step']} AS step, '' AS outcome, 1 AS n FROM {p['elements']} "
            f"WHERE {p['is_step']} GROUP BY {p['step']} UNION ALL "
            f"SELECT 'outcome', {p['step']}, {p['outcome']}, count(*) FROM {p['elements']} "
            f"WHERE {p['is_step']} AND {p['is_outcome']} GROUP BY {p['step']}, {p['outcome']} UNION ALL "
            f"SELECT {current}, {row}.current_step, '', 1 WHERE coalesce({row}.current_step, '') <> '') k "
            f"WHERE true ON CONFLICT ({STEP_KEY}) DO UPDATE SET runs = journey_step_tally.runs + excluded.runs")


def _run_backfill_sql(sqlite: bool) -> str:
    p = {k: v.format(r="r") for k, v in _run_parts(sqlite).items()}
    return (f"INSERT INTO journey_step_tally ({STEP_KEY}, runs) SELECT workspace_id, journey_id, version, kind, step, "
            "outcome, 0, sum(n) FROM ("
            "SELECT workspace_id, journey_id, version, 'entered' AS kind, step, '' AS outcome, 1 AS n FROM ("
            f"SELECT DISTINCT r.id, r.workspace_id, r.journey_id, r.version, {p['step']} AS step "
            f"FROM journey_run r, {p['elements']} WHERE {p['is_step']}) taken UNION ALL "
            f"SELECT r.workspace_id, r.journey_id, r.version, 'outcome', {p['step']}, {p['outcome']}, 1 "
            f"FROM journey_run r, {p['elements']} WHERE {p['is_step']} AND {p['is_outcome']} UNION ALL "
            "SELECT workspace_id, journey_id, version, CASE WHEN status = 'active' THEN 'waiting' ELSE 'ended' END, "
            "current_step, '', 1 FROM journey_run WHERE coalesce(current_step, '') <> '') c "
            "GROUP BY workspace_id, journey_id, version, kind, step, outcome")


def _run_tally(sqlite: bool) -> None:
    op.create_table(
        "journey_step_tally",
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("journey_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "journey_id", "version", "kind", "step", "outcome", "shard"),
    )
    columns = "steps, status, current_step, version, journey_id, workspace_id"
    if sqlite:
        op.execute(_run_backfill_sql(True))
        op.execute("CREATE TRIGGER tr_journey_run_tally_insert AFTER INSERT ON journey_run BEGIN "
                   f"{_run_count_sql(True, 'new', 1, '0')}; END")
        op.execute(f"CREATE TRIGGER tr_journey_run_tally_update AFTER UPDATE OF {columns} ON journey_run BEGIN "
                   f"{_run_count_sql(True, 'old', -1, '0')}; {_run_count_sql(True, 'new', 1, '0')}; END")
        op.execute("CREATE TRIGGER tr_journey_run_tally_delete AFTER DELETE ON journey_run BEGIN "
                   f"{_run_count_sql(True, 'old', -1, '0')}; END")
        return
    op.execute("LOCK TABLE journey_run IN SHARE ROW EXCLUSIVE MODE")
    op.execute(_run_backfill_sql(False))
    shard = f"pg_backend_pid() % {SHARDS}"
    op.execute("CREATE FUNCTION tidings_journey_step_tally() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
               f"IF TG_OP IN ('UPDATE', 'DELETE') THEN {_run_count_sql(False, 'OLD', -1, shard)}; END IF; "
               f"IF TG_OP IN ('INSERT', 'UPDATE') THEN {_run_count_sql(False, 'NEW', 1, shard)}; END IF; "
               "RETURN NULL; END $$")
    op.execute("CREATE TRIGGER tr_journey_run_tally AFTER INSERT OR DELETE OR UPDATE OF "
               f"{columns} ON journey_run FOR EACH ROW EXECUTE FUNCTION tidings_journey_step_tally()")


def upgrade() -> None:
    _run_tally(op.get_bind().dialect.name == "sqlite")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER tr_journey_run_tally_{name}")
    else:
        op.execute("DROP TRIGGER tr_journey_run_tally ON journey_run")
        op.execute("DROP FUNCTION tidings_journey_step_tally()")
    op.drop_table("journey_step_tally")
