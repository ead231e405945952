"""journey_message_tally (tidings.engine.analytics.tables.JourneyMessageTally): a journey's message counts
(events, distinct customers, distinct message ids) per metric and grouping, kept by triggers on
`message_fact` in the writing transaction and filled here from the facts there are, so the journey page's
unwindowed report reads a few rows instead of counting DISTINCT over every message event of the journey
(tests/benchmarks/README.md, "Journey page and overview from tallies").

A count of distinct customers (or message ids) goes up when a fact arrives whose customer (message) had no
other fact in that group, and down when the last one is deleted: the EXISTS checks are index seeks by
(workspace, journey, customer) and (workspace, journey, message id). On PostgreSQL each writer counts into
its own shard of the rows (backend pid % 16), so concurrent writers of one journey do not queue on one row
until they commit (SQLite has one writer: shard 0; the fill here shards by customer); only the sum over
shards means anything. A transaction advisory lock per (journey, customer) and per (journey, message id)
makes the EXISTS check and the count one step against concurrent writers of the same customer or message.

`message_metric` maps each message event name to its metric (the names and metrics of
tidings.engine.analytics.metrics as of this revision)."""
import sqlalchemy as sa
from alembic import op

revision = "0020_pagefast_journey_tallies"
down_revision = "0019_consolescale_message_facts"
branch_labels = None
depends_on = None

CHANNELS = ("email", "sms", "voice", "push", "webhook", "custom")
METRICS = {
    "sent": ("send",), "delivered": ("delivered",), "failed": ("failed", "rejected", "rendering_failure"),
    "bounced": ("hard_bounce", "soft_bounce"), "complained": ("complaint",), "opened": ("open",),
    "clicked": ("click",), "unsubscribed": ("unsubscribe",),
}
SHARDS = 16
MAX_TS = 2 ** 63 - 1
# grouped_by: 0 = (step, variant, channel), 1 = the whole journey, 2 = step, 3 = variant, 4 = channel
GROUPINGS = {0: ("step_id", "variant", "channel"), 1: (), 2: ("step_id",), 3: ("variant",), 4: ("channel",)}
KEY_OF = {"step_id": "step_key", "variant": "variant_key", "channel": "channel_key"}
TALLY_KEY = "workspace_id, journey_id, grouped_by, metric, step_key, variant_key, channel_key, shard"


def _dialect() -> dict[str, str]:
    if op.get_bind().dialect.name == "sqlite":
        return {"none": "char(1)", "same": "IS", "int": "", "least": "min", "greatest": "max", "true": "1", "sqlite": "1",
                "shard": "0"}
    return {"none": "chr(1)", "same": "IS NOT DISTINCT FROM", "int": "::int", "least": "least",
            "greatest": "greatest", "true": "true", "sqlite": "",
            "shard": f"pg_backend_pid() % {SHARDS}"}


def _key(d: dict[str, str], row: str, column: str, grouping: str) -> str:
    """The tally's key column for `column` of the fact `row`: its value (chr(1) for NULL) where `grouping`
    groups by it, else chr(1)."""
    groups = ", ".join(str(g) for g, cols in GROUPINGS.items() if column in cols)
    return (f"CASE WHEN {grouping} IN ({groups}) THEN coalesce({row}.{column}, {d['none']}) "
            f"ELSE {d['none']} END")


def _other_fact(d: dict[str, str], row: str, by: str, grouping: str, metric: str) -> str:
    """EXISTS a fact other than `row` in `row`'s group (of `grouping`, for `metric`) with its customer
    (`by` = user_pk) or message id (`by` = message_id)."""
    same = " AND ".join(f"({grouping} NOT IN ({', '.join(str(g) for g, cols in GROUPINGS.items() if c in cols)}) "
                        f"OR f.{c} {d['same']} {row}.{c})" for c in KEY_OF)
    # driven by the customer's (message's) facts, a handful, never by the facts of a name: SQLite without
    # statistics would otherwise walk every fact of the metric's names
    index = f"INDEXED BY ix_message_fact_journey_{'user' if by == 'user_pk' else 'message'} " if d["sqlite"] else ""
    return (f"EXISTS (SELECT 1 FROM message_fact f {index}"
            f"WHERE f.workspace_id = {row}.workspace_id AND f.journey_id = {row}.journey_id AND f.{by} = {row}.{by} "
            f"AND f.event_pk <> {row}.event_pk AND {same} "
            f"AND (SELECT fm.metric FROM message_metric fm WHERE fm.name = f.name) = {metric})")


GROUPING_ROWS = " UNION ALL ".join(f"SELECT {g} AS grouped_by" for g in GROUPINGS)


def _count_sql(d: dict[str, str], row: str, sign: int) -> str:
    """Count the fact `row` in (sign 1: it was inserted) or out of (-1: deleted) each of its groups' tally,
    in this writer's shard (see _shard)."""
    t = "journey_message_tally"
    keys = [_key(d, row, c, "g.grouped_by") for c in KEY_OF]
    customer = f"(NOT {_other_fact(d, row, 'user_pk', 'g.grouped_by', 'm.metric')}){d['int']}"
    message = (f"({row}.message_id IS NOT NULL AND NOT {_other_fact(d, row, 'message_id', 'g.grouped_by', 'm.metric')})"
               f"{d['int']}")
    if sign > 0:
        bounds = f"{row}.ts, {row}.ts, {d['true']}"
    else:  # times that move no bound; and the group's first or last time may have gone with this fact
        group = (f"FROM {t} t2 WHERE t2.workspace_id = {row}.workspace_id AND t2.journey_id = {row}.journey_id "
                 "AND t2.grouped_by = g.grouped_by AND t2.metric = m.metric AND "
                 + " AND ".join(f"t2.{KEY_OF[c]} = {k}" for c, k in zip(KEY_OF, keys)))
        bounds = (f"{MAX_TS}, {-MAX_TS}, NOT ({row}.ts <= (SELECT min(t2.min_ts) {group}) "
                  f"OR {row}.ts >= (SELECT max(t2.max_ts) {group}))")
    minus = "" if sign > 0 else "-"
    return (f"INSERT INTO {t} ({TALLY_KEY}, events, customers, messages, min_ts, max_ts, bounds_exact) "
            f"SELECT {row}.workspace_id, {row}.journey_id, g.grouped_by, m.metric, {', '.join(keys)}, {d['shard']}, "
            f"{sign}, {minus}{customer}, {minus}{message}, {bounds} "
            f"FROM message_metric m, ({GROUPING_ROWS}) g WHERE m.name = {row}.name "
            f"ON CONFLICT ({TALLY_KEY}) DO UPDATE SET events = {t}.events + excluded.events, "
            f"customers = {t}.customers + excluded.customers, messages = {t}.messages + excluded.messages, "
            f"min_ts = {d['least']}({t}.min_ts, excluded.min_ts), max_ts = {d['greatest']}({t}.max_ts, excluded.max_ts), "
            f"bounds_exact = {t}.bounds_exact AND excluded.bounds_exact")


def _backfill_sql(d: dict[str, str]) -> list[str]:
    """Per shard: events, customers, first and last time; then each group's distinct message ids, into
    shard 0 (only the sum over shards is read)."""
    def select(grouping: int, sharded: bool) -> str:
        cols = GROUPINGS[grouping]
        keys = ", ".join(f"coalesce(f.{c}, {d['none']})" if c in cols else d["none"] for c in KEY_OF)
        group = ", ".join([f"f.{c}" for c in cols] + ([f"f.user_pk % {SHARDS}"] if sharded else []))
        common = (f"f.workspace_id, f.journey_id, {grouping}, m.metric, {keys}, "
                  + (f"f.user_pk % {SHARDS}, count(*), count(DISTINCT f.user_pk), 0, min(f.ts), max(f.ts), {d['true']}"
                     if sharded else f"0, 0, 0, count(DISTINCT f.message_id), min(f.ts), max(f.ts), {d['true']}"))
        return (f"SELECT {common} FROM message_fact f JOIN message_metric m ON m.name = f.name "
                f"WHERE f.journey_id IS NOT NULL GROUP BY f.workspace_id, f.journey_id, m.metric"
                + (f", {group}" if group else ""))

    cols = f"{TALLY_KEY}, events, customers, messages, min_ts, max_ts, bounds_exact"
    return [f"INSERT INTO journey_message_tally ({cols}) " + " UNION ALL ".join(select(g, True) for g in GROUPINGS),
            *[f"INSERT INTO journey_message_tally ({cols}) {select(g, False)} "
              f"ON CONFLICT ({TALLY_KEY}) DO UPDATE SET messages = journey_message_tally.messages + excluded.messages"
              for g in GROUPINGS]]


def upgrade() -> None:
    metric = op.create_table(
        "message_metric",
        sa.Column("name", sa.String(length=255), primary_key=True),
        sa.Column("metric", sa.String(length=32), nullable=False),
    )
    op.bulk_insert(metric, [{"name": f"_{c}.{t}", "metric": m} for m, ts in METRICS.items() for t in ts
                            for c in CHANNELS])
    op.create_table(
        "journey_message_tally",
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("journey_id", sa.Text(), nullable=False),
        sa.Column("grouped_by", sa.SmallInteger(), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("step_key", sa.Text(), nullable=False),
        sa.Column("variant_key", sa.Text(), nullable=False),
        sa.Column("channel_key", sa.Text(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("customers", sa.BigInteger(), nullable=False),
        sa.Column("messages", sa.BigInteger(), nullable=False),
        sa.Column("min_ts", sa.BigInteger(), nullable=False),
        sa.Column("max_ts", sa.BigInteger(), nullable=False),
        sa.Column("bounds_exact", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "journey_id", "grouped_by", "metric", "step_key", "variant_key",
                                "channel_key", "shard"),
    )
    # the EXISTS checks of the triggers: a customer's, a message's facts in the journey
    op.create_index("ix_message_fact_journey_user", "message_fact", ["workspace_id", "journey_id", "user_pk"])
    op.create_index("ix_message_fact_journey_message", "message_fact", ["workspace_id", "journey_id", "message_id"])
    d = _dialect()
    if op.get_bind().dialect.name == "sqlite":
        for sql in _backfill_sql(d):
            op.execute(sql)
        op.execute("CREATE TRIGGER tr_message_fact_tally_insert AFTER INSERT ON message_fact "
                   f"WHEN new.journey_id IS NOT NULL BEGIN {_count_sql(d, 'new', 1)}; END")
        op.execute("CREATE TRIGGER tr_message_fact_tally_delete AFTER DELETE ON message_fact "
                   f"WHEN old.journey_id IS NOT NULL BEGIN {_count_sql(d, 'old', -1)}; END")
    else:
        # writers wait from here to the commit (see 0019): a fact written between the fill and the triggers
        # would be counted in neither
        op.execute("LOCK TABLE message_fact IN SHARE ROW EXCLUSIVE MODE")
        for sql in _backfill_sql(d):
            op.execute(sql)
        lock = ("PERFORM pg_advisory_xact_lock(hashtext('tally:' || {r}.workspace_id || ':' || {r}.journey_id), "
                "{r}.user_pk); IF {r}.message_id IS NOT NULL THEN PERFORM pg_advisory_xact_lock(hashtext("
                "'tally:' || {r}.workspace_id || ':' || {r}.journey_id || ':' || {r}.message_id)); END IF; ")
        op.execute("CREATE FUNCTION tidings_journey_message_tally() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   f"IF TG_OP = 'DELETE' THEN {lock.format(r='OLD')}{_count_sql(d, 'OLD', -1)}; RETURN OLD; END IF; "
                   f"{lock.format(r='NEW')}{_count_sql(d, 'NEW', 1)}; RETURN NEW; END $$")
        op.execute("CREATE TRIGGER tr_message_fact_tally_insert AFTER INSERT ON message_fact FOR EACH ROW "
                   "WHEN (NEW.journey_id IS NOT NULL) EXECUTE FUNCTION tidings_journey_message_tally()")
        op.execute("CREATE TRIGGER tr_message_fact_tally_delete AFTER DELETE ON message_fact FOR EACH ROW "
                   "WHEN (OLD.journey_id IS NOT NULL) EXECUTE FUNCTION tidings_journey_message_tally()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER tr_message_fact_tally_insert")
        op.execute("DROP TRIGGER tr_message_fact_tally_delete")
    else:
        op.execute("DROP TRIGGER tr_message_fact_tally_insert ON message_fact")
        op.execute("DROP TRIGGER tr_message_fact_tally_delete ON message_fact")
        op.execute("DROP FUNCTION tidings_journey_message_tally()")
    op.drop_index("ix_message_fact_journey_message", table_name="message_fact")
    op.drop_index("ix_message_fact_journey_user", table_name="message_fact")
    op.drop_table("journey_message_tally")
    op.drop_table("message_metric")
