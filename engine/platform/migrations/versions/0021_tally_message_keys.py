"""message_key (tidings.engine.analytics.tables.MessageKey): an integer per (workspace, message id), and
message_fact.message_key pointing at it, set by the message-fact insert trigger and filled here from the
facts there are. The metrics count distinct messages over this integer instead of the TEXT message id: on
SQLite the per-group temp B-tree of text keys was most of the journey page's and the overview's GROUP BY
(tests/benchmarks/README.md, "Distinct messages over an integer key"). The covering indexes carry the key
in place of the text id.

The key is exact under concurrent writers: the dictionary's unique (workspace_id, message_id) is the
arbiter of an INSERT ... ON CONFLICT DO NOTHING, so two transactions writing events of one new message get
one key (the second waits on the first's uncommitted row, then reads it). Existing keys are read through
the unique index (on PostgreSQL with seq scans off in the trigger function, so a plan cached while the
table was empty cannot turn into a scan per event: what made an EXISTS-based tally quadratic on PostgreSQL
bulk inserts), and are not locked. Keys are never deleted with their facts (retention pruning): a later event of the
same message finds the same key, and deleting the workspace deletes them."""
import sqlalchemy as sa
from alembic import op

revision = "0021_tally_message_keys"
down_revision = "0020_pagefast_step_tally"
branch_labels = None
depends_on = None

TEXT_KEYS = ("message_id", "journey_id", "journey_version", "step_id", "variant", "channel")
COLUMNS = "event_pk, workspace_id, name, ts, user_pk, " + ", ".join(TEXT_KEYS) + ", transactional"
JOURNEY_INDEX = ["workspace_id", "journey_id", "name", "step_id", "variant", "channel", "user_pk", "{m}", "ts",
                 "journey_version"]
TIME_INDEX = ["workspace_id", "ts", "name", "channel", "transactional", "user_pk", "{m}"]


def _sqlite_text(row: str, key: str) -> str:  # as in 0019: as PostgreSQL's ->> gives it (JSON true is 'true')
    path = f"'$.{key}'"
    return (f"CASE json_type({row}.attributes, {path}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
            f"ELSE CAST(json_extract({row}.attributes, {path}) AS TEXT) END")


def _sqlite_values(row: str) -> str:
    return (f"{row}.id, {row}.workspace_id, {row}.name, {row}.ts, {row}.user_pk, "
            + ", ".join(_sqlite_text(row, k) for k in TEXT_KEYS)
            + f", coalesce(json_type({row}.attributes, '$.transactional') = 'true', 0)")


def _postgresql_values(row: str) -> str:
    a = f"{row}.attributes"
    return (f"{row}.id, {row}.workspace_id, {row}.name, {row}.ts, {row}.user_pk, "
            + ", ".join(f"{a} ->> '{k}'" for k in TEXT_KEYS)
            + f", coalesce(json_typeof({a} -> 'transactional') = 'boolean' AND {a} ->> 'transactional' = 'true', false)")


def _indexes(message_column: str) -> None:
    for name, columns in (("ix_message_fact_journey", JOURNEY_INDEX), ("ix_message_fact_time", TIME_INDEX)):
        op.drop_index(name, table_name="message_fact")
        op.create_index(name, "message_fact", [c.format(m=message_column) for c in columns])


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "message_key",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.UniqueConstraint("workspace_id", "message_id", name="uq_message_key_message"),
    )
    op.add_column("message_fact", sa.Column("message_key", sa.Integer(), nullable=True))
    if sqlite:
        message_id = _sqlite_text("new", "message_id")
        op.execute("DROP TRIGGER tr_event_message_fact_insert")
        op.execute("CREATE TRIGGER tr_event_message_fact_insert AFTER INSERT ON event "
                   "WHEN substr(new.name, 1, 1) = '_' BEGIN "
                   f"INSERT INTO message_key (workspace_id, message_id) SELECT new.workspace_id, {message_id} "
                   f"WHERE {message_id} IS NOT NULL ON CONFLICT (workspace_id, message_id) DO NOTHING; "
                   f"INSERT INTO message_fact ({COLUMNS}, message_key) VALUES ({_sqlite_values('new')}, "
                   f"(SELECT id FROM message_key WHERE workspace_id = new.workspace_id AND message_id = {message_id})); "
                   "END")
    else:
        # as in 0019: writers of other processes wait from here to the commit, so no event is left unkeyed
        op.execute("LOCK TABLE event IN SHARE ROW EXCLUSIVE MODE")
        # An existing key is read, not upserted with DO UPDATE: that would lock its row to the commit, and two
        # transactions writing opens of the same two messages in opposite orders would deadlock. DO NOTHING
        # waits only on a concurrent inserter of the same new key. The read's plan is cached by plpgsql,
        # perhaps while message_key is still empty (a bulk write into a new database): enable_seqscan off
        # keeps it on the unique index, so it never becomes a scan per event.
        op.execute("CREATE OR REPLACE FUNCTION tidings_message_fact() RETURNS trigger LANGUAGE plpgsql "
                   "SET enable_seqscan = off AS $$ "
                   "DECLARE key integer; message text; BEGIN "
                   "IF TG_OP = 'DELETE' THEN DELETE FROM message_fact WHERE event_pk = OLD.id; RETURN OLD; END IF; "
                   "message := NEW.attributes ->> 'message_id'; "
                   "IF message IS NOT NULL THEN "
                   "INSERT INTO message_key (workspace_id, message_id) VALUES (NEW.workspace_id, message) "
                   "ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING id INTO key; "
                   "IF key IS NULL THEN SELECT k.id INTO key FROM message_key k "
                   "WHERE k.workspace_id = NEW.workspace_id AND k.message_id = message; END IF; END IF; "
                   f"INSERT INTO message_fact ({COLUMNS}, message_key) VALUES ({_postgresql_values('NEW')}, key); "
                   "RETURN NEW; END $$")
    op.execute("INSERT INTO message_key (workspace_id, message_id) SELECT DISTINCT workspace_id, message_id "
               "FROM message_fact WHERE message_id IS NOT NULL AND message_key IS NULL "
               "ON CONFLICT (workspace_id, message_id) DO NOTHING")
    op.execute("UPDATE message_fact SET message_key = (SELECT k.id FROM message_key k WHERE k.workspace_id = "
               "message_fact.workspace_id AND k.message_id = message_fact.message_id) "
               "WHERE message_id IS NOT NULL AND message_key IS NULL")
    _indexes("message_key")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("DROP TRIGGER tr_event_message_fact_insert")
        op.execute("CREATE TRIGGER tr_event_message_fact_insert AFTER INSERT ON event "
                   "WHEN substr(new.name, 1, 1) = '_' BEGIN "
                   f"INSERT INTO message_fact ({COLUMNS}) VALUES ({_sqlite_values('new')}); END")
    else:
        op.execute("CREATE OR REPLACE FUNCTION tidings_message_fact() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   "IF TG_OP = 'DELETE' THEN DELETE FROM message_fact WHERE event_pk = OLD.id; RETURN OLD; END IF; "
                   f"INSERT INTO message_fact ({COLUMNS}) VALUES ({_postgresql_values('NEW')}); RETURN NEW; END $$")
    _indexes("message_id")
    op.drop_column("message_fact", "message_key")
    op.drop_table("message_key")
