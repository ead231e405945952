"""message_fact (tidings.engine.analytics.tables.MessageFact): each message event's grouping attributes as
plain columns under covering indexes, kept by triggers on `event` in the writing transaction, filled here
from the events there are. The console's overview and journey page count these instead of parsing every
message event's JSON (tests/benchmarks/README.md, "Console pages at 100,000 customers")."""
import sqlalchemy as sa
from alembic import op

revision = "0019_consolescale_message_facts"
down_revision = "0018_pgfast_customer_jsonb"
branch_labels = None
depends_on = None

TEXT_KEYS = ("message_id", "journey_id", "journey_version", "step_id", "variant", "channel")
COLUMNS = "event_pk, workspace_id, name, ts, user_pk, " + ", ".join(TEXT_KEYS) + ", transactional"


def _sqlite_values(row: str) -> str:
    def text(key: str) -> str:  # as PostgreSQL's ->> and the metrics' _text give it: JSON true is 'true'
        path = f"'$.{key}'"
        return (f"CASE json_type({row}.attributes, {path}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
                f"ELSE CAST(json_extract({row}.attributes, {path}) AS TEXT) END")
    return (f"{row}.id, {row}.workspace_id, {row}.name, {row}.ts, {row}.user_pk, "
            + ", ".join(text(k) for k in TEXT_KEYS)
            + f", coalesce(json_type({row}.attributes, '$.transactional') = 'true', 0)")


def _postgresql_values(row: str) -> str:
    a = f"{row}.attributes"
    return (f"{row}.id, {row}.workspace_id, {row}.name, {row}.ts, {row}.user_pk, "
            + ", ".join(f"{a} ->> '{k}'" for k in TEXT_KEYS)
            + f", coalesce(json_typeof({a} -> 'transactional') = 'boolean' AND {a} ->> 'transactional' = 'true', false)")


def upgrade() -> None:
    op.create_table(
        "message_fact",
        sa.Column("event_pk", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("user_pk", sa.Integer(), nullable=False),
        *[sa.Column(k, sa.Text(), nullable=True) for k in TEXT_KEYS],
        sa.Column("transactional", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_message_fact_journey", "message_fact", ["workspace_id", "journey_id", "name", "step_id",
                    "variant", "channel", "user_pk", "message_id", "ts", "journey_version"])
    op.create_index("ix_message_fact_time", "message_fact", ["workspace_id", "ts", "name", "channel", "transactional",
                    "user_pk", "message_id"])
    # message events are the names starting with `_` (`_email.send`; tidings.engine.messaging.ledger)
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"INSERT INTO message_fact ({COLUMNS}) SELECT {_sqlite_values('event')} FROM event "
                   "WHERE substr(event.name, 1, 1) = '_'")
        op.execute("CREATE TRIGGER tr_event_message_fact_insert AFTER INSERT ON event "
                   "WHEN substr(new.name, 1, 1) = '_' BEGIN "
                   f"INSERT INTO message_fact ({COLUMNS}) VALUES ({_sqlite_values('new')}); END")
        op.execute("CREATE TRIGGER tr_event_message_fact_delete AFTER DELETE ON event "
                   "WHEN substr(old.name, 1, 1) = '_' BEGIN "
                   "DELETE FROM message_fact WHERE event_pk = old.id; END")
    else:
        # Writers of other processes (a rolling deploy's old workers) wait from here to the commit: an event
        # committed between the copy and CREATE TRIGGER would be in neither. SQLite has a single writer.
        op.execute("LOCK TABLE event IN SHARE ROW EXCLUSIVE MODE")
        op.execute(f"INSERT INTO message_fact ({COLUMNS}) SELECT {_postgresql_values('event')} FROM event "
                   "WHERE left(event.name, 1) = '_'")
        op.execute("CREATE FUNCTION tidings_message_fact() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   "IF TG_OP = 'DELETE' THEN DELETE FROM message_fact WHERE event_pk = OLD.id; RETURN OLD; END IF; "
                   f"INSERT INTO message_fact ({COLUMNS}) VALUES ({_postgresql_values('NEW')}); RETURN NEW; END $$")
        op.execute("CREATE TRIGGER tr_event_message_fact_insert AFTER INSERT ON event FOR EACH ROW "
                   "WHEN (left(NEW.name, 1) = '_') EXECUTE FUNCTION tidings_message_fact()")
        op.execute("CREATE TRIGGER tr_event_message_fact_delete AFTER DELETE ON event FOR EACH ROW "
                   "WHEN (left(OLD.name, 1) = '_') EXECUTE FUNCTION tidings_message_fact()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER tr_event_message_fact_insert")
        op.execute("DROP TRIGGER tr_event_message_fact_delete")
    else:
        op.execute("DROP TRIGGER tr_event_message_fact_insert ON event")
        op.execute("DROP TRIGGER tr_event_message_fact_delete ON event")
        op.execute("DROP FUNCTION tidings_message_fact()")
    op.drop_index("ix_message_fact_time", table_name="message_fact")
    op.drop_index("ix_message_fact_journey", table_name="message_fact")
    op.drop_table("message_fact")
