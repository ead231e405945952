"""Channel secrets are sealed at rest: what the database holds, what happens without a key, with the wrong
key, across a key rotation, and for rows stored in plain text before encryption existed."""
from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from litestar.testing import TestClient
from sqlalchemy import text

from tidings.api.app import create_app
from tidings.engine.channels import secrets as channel_secrets
from tidings.engine.platform.clock import now_ms
from tidings.engine.channels.tables import channel_configs, channel_routes
from tidings.engine.workspaces.service import create_key
from tests.conftest import Api
from .conftest import seed

TOKEN = "tw-secret-7f3a9c"
FEEDBACK_SECRET = "fb-" + "s" * 250  # the longest allowed feedback secret: its sealed form is ~450 characters
TIDINGS = str(Path(sys.executable).parent / "tidings")


def twilio_config(server) -> dict:
    return {"base_url": server.url, "account_sid": "AC123", "auth_token": TOKEN, "from_number": "+15550001111"}


def raw_row(db) -> str:
    """The channel_config row exactly as the database holds it (JSON text and all)."""
    with db.connect() as conn:
        return " ".join(str(v) for v in conn.execute(text(
            "SELECT config, feedback_secret FROM channel_config WHERE name = 'twilio-sms'")).one())


def send_sms(api) -> dict:
    r = api.post("/v1/messages", json={"channel": "SMS", "content": {"body": "code 42"},
                                        "recipients": [{"user_id": "ana"}]})
    assert r.status_code == 200, r.text
    return r.json()["results"][0]


def basic_auth(req) -> str:
    return base64.b64decode(req.headers["authorization"].split()[1]).decode()


@pytest.fixture
def twilio(http_server):
    return http_server(lambda req: (201, {"sid": "SM" + "1" * 32, "status": "queued"}))


def test_secrets_are_sealed_in_the_database_and_opened_for_sending(api, db, twilio):
    r = api.put("/v1/channels/twilio-sms", json={"config": twilio_config(twilio), "feedback_secret": FEEDBACK_SECRET})
    assert r.status_code == 200, r.text
    stored = raw_row(db)
    assert TOKEN not in stored and "s" * 40 not in stored and "fernet:" in stored
    assert "AC123" in stored  # settings that are not secret stay readable
    listed = api.get("/v1/channels").json()
    assert listed["items"][0]["config"]["auth_token"] == "***" and TOKEN not in str(listed)
    seed(api, "ana", endpoints=[("ana-phone", "SMS", "+14155550101")])
    assert send_sms(api)["status"] == "sent"
    assert basic_auth(twilio.requests[-1]) == f"AC123:{TOKEN}"
    # "***" keeps the stored secret: still sealed, still the same token
    assert api.put("/v1/channels/twilio-sms", json={"config": {**twilio_config(twilio), "auth_token": "***"},
                                                    "feedback_secret": "***"}).status_code == 200
    assert TOKEN not in raw_row(db)
    assert send_sms(api)["status"] == "sent" and basic_auth(twilio.requests[-1]) == f"AC123:{TOKEN}"


def test_without_a_key_secrets_are_refused_and_start_up_says_so(settings, monkeypatch, caplog, twilio):
    monkeypatch.delenv("TIDINGS_ENCRYPTION_KEYS")
    monkeypatch.delenv("TIDINGS_ENCRYPTION_KEY_FILE", raising=False)
    monkeypatch.setenv("TIDINGS_HOME", str(settings.home))
    with caplog.at_level(logging.WARNING, logger="tidings.secrets"), TestClient(create_app(settings)) as client:
        assert any("no encryption key for channel secrets" in r.getMessage() for r in caplog.records)
        api = Api(client, create_key(client.app.state.db, "acme")[1])
        r = api.put("/v1/channels/twilio-sms", json={"config": twilio_config(twilio)})
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert err["code"] == "no_encryption_key" and err["field"] == "config.auth_token"
        assert "TIDINGS_ENCRYPTION_KEYS" in err["message"] and TOKEN not in r.text
        assert api.get("/v1/channels").json()["items"] == []  # nothing half-written
        # a channel without secrets needs no key; a feedback secret does
        assert api.put("/v1/channels/outbox", json={"channel_types": ["SMS"]}).status_code == 200
        r = api.put("/v1/channels/outbox", json={"channel_types": ["SMS"], "feedback_secret": FEEDBACK_SECRET})
        assert (r.status_code, r.json()["error"]["field"]) == (409, "feedback_secret")


def test_a_wrong_key_fails_the_send_naming_the_channel(api, db, twilio, monkeypatch):
    assert api.put("/v1/channels/twilio-sms", json={"config": twilio_config(twilio)}).status_code == 200
    seed(api, "ana", endpoints=[("ana-phone", "SMS", "+14155550101")])
    monkeypatch.setenv("TIDINGS_ENCRYPTION_KEYS", Fernet.generate_key().decode())  # the sealing key is gone
    result = send_sms(api)
    assert result["status"] == "failed"
    assert "channel 'twilio-sms'" in result["error"] and "'auth_token' cannot be decrypted" in result["error"]
    assert twilio.requests == []  # nothing reached the provider
    [ev] = api.get("/v1/events", params={"name": "_sms.failed"}).json()["items"]
    assert ev["attributes"]["permanent"] is True and "cannot be decrypted" in ev["attributes"]["error"]
    route = api.get("/v1/channels").json()["routes"]["SMS"]
    assert route["channel"] == "twilio-sms" and "cannot be decrypted" in route["error"]
    # the provider's delivery callback cannot be verified: a 503 it retries, with no key details in it
    r = api.client.post("/feedback/acme/twilio-sms?tidings_message_id=m1", data={"MessageSid": "SM1",
                                                                                "MessageStatus": "delivered"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    assert "twilio-sms" in r.text and "TIDINGS_ENCRYPTION_KEYS" not in r.text and "fingerprint" not in r.text
    r = api.put("/v1/channels/twilio-sms", json={"config": {**twilio_config(twilio), "auth_token": "***"}})
    assert r.status_code == 409 and r.json()["error"]["field"] == "config.auth_token"
    # storing the real value again repairs it
    assert api.put("/v1/channels/twilio-sms", json={"config": twilio_config(twilio)}).status_code == 200
    assert send_sms(api)["status"] == "sent"


def _cli(settings, *args: str, keys: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIDINGS_HOME": str(settings.home), "TIDINGS_DATABASE_URL": settings.database_url,
           "TIDINGS_ENCRYPTION_KEYS": keys}
    return subprocess.run([TIDINGS, *args], env=env, capture_output=True, text=True, timeout=60)


def test_key_rotation_reseals_every_secret(api, db, settings, twilio, monkeypatch):
    old = os.environ["TIDINGS_ENCRYPTION_KEYS"]
    assert api.put("/v1/channels/twilio-sms", json={"config": twilio_config(twilio),
                                                    "feedback_secret": FEEDBACK_SECRET}).status_code == 200
    seed(api, "ana", endpoints=[("ana-phone", "SMS", "+14155550101")])
    assert api.put("/v1/event-streams/hook", json={"kind": "webhook", "enabled": False, "config": {
        "url": "https://hooks.example.com/t", "secret": "whsec-rotated"}}).status_code == 201
    new = _cli(settings, "secrets", "new-key", keys=old).stdout.strip()
    Fernet(new.encode())  # a real key
    monkeypatch.setenv("TIDINGS_ENCRYPTION_KEYS", f"{new},{old}")  # the new key first: reads try both
    assert send_sms(api)["status"] == "sent"
    out = _cli(settings, "secrets", "rotate", keys=f"{new},{old}")
    assert out.returncode == 0, out.stderr
    assert "3 re-sealed from an older key" in out.stdout and TOKEN not in out.stdout + out.stderr
    again = _cli(settings, "secrets", "rotate", keys=f"{new},{old}")
    assert "0 re-sealed" in again.stdout and "3 already current" in again.stdout
    with db.connect() as conn:  # the stream's sink secret too, now under the new key alone
        sealed = conn.execute(text("SELECT config FROM event_stream WHERE stream_id = 'hook'")).scalar_one()
    sealed = json.loads(sealed) if isinstance(sealed, str) else sealed
    assert json.loads(Fernet(new.encode()).decrypt(sealed["secret"].removeprefix("fernet:"))) == "whsec-rotated"
    monkeypatch.setenv("TIDINGS_ENCRYPTION_KEYS", new)  # the old key dropped
    assert send_sms(api)["status"] == "sent" and basic_auth(twilio.requests[-1]) == f"AC123:{TOKEN}"
    assert TOKEN not in raw_row(db)
    # a row no configured key opens is named, and the command fails
    bad = _cli(settings, "secrets", "rotate", keys=Fernet.generate_key().decode())
    assert bad.returncode == 1 and "channel 'twilio-sms' of workspace 'acme'" in bad.stderr


def test_plain_rows_from_before_encryption_keep_working_and_are_sealed_at_start_up(settings, twilio):
    with TestClient(create_app(settings)) as client:
        db = client.app.state.db
        workspace, key = create_key(db, "acme")
        api = Api(client, key)
        seed(api, "ana", endpoints=[("ana-phone", "SMS", "+14155550101")])
        with db.begin() as conn:  # a row as the code before encryption stored it
            conn.execute(channel_configs.insert().values(
                workspace_id=workspace.id, name="twilio-sms", config=twilio_config(twilio), rate_limit=None,
                feedback_secret=FEEDBACK_SECRET, created_at=now_ms(), updated_at=now_ms()))
            conn.execute(channel_routes.insert().values(workspace_id=workspace.id, channel_type="SMS", name="twilio-sms"))
        assert TOKEN in raw_row(db)
        assert send_sms(api)["status"] == "sent"  # read as it is
        assert basic_auth(twilio.requests[-1]) == f"AC123:{TOKEN}"
    with TestClient(create_app(settings)) as client:  # the next start-up seals it
        assert TOKEN not in raw_row(client.app.state.db) and "s" * 40 not in raw_row(client.app.state.db)
        api = Api(client, key)
        assert send_sms(api)["status"] == "sent" and basic_auth(twilio.requests[-1]) == f"AC123:{TOKEN}"


def test_unusable_keys_stop_start_up_with_the_reason(settings, monkeypatch):
    monkeypatch.setenv("TIDINGS_ENCRYPTION_KEYS", f"{Fernet.generate_key().decode()},not-a-key")
    with pytest.raises(BaseExceptionGroup) as start_up:  # the lifespan's task group carries it out
        with TestClient(create_app(settings)):
            pass
    assert start_up.group_contains(channel_secrets.EncryptionKeyError, match="key 2 is not a Fernet key")
    monkeypatch.delenv("TIDINGS_ENCRYPTION_KEYS")
    monkeypatch.setenv("TIDINGS_ENCRYPTION_KEY_FILE", str(settings.home / "missing-keys"))
    with pytest.raises(channel_secrets.EncryptionKeyError, match="missing-keys does not exist"):
        channel_secrets.keyring()


def test_the_dev_key_file_is_made_once_and_found_in_the_state_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("TIDINGS_ENCRYPTION_KEYS")
    monkeypatch.delenv("TIDINGS_ENCRYPTION_KEY_FILE", raising=False)
    monkeypatch.setenv("TIDINGS_HOME", str(tmp_path / "home"))
    assert channel_secrets.keyring() is None
    path = channel_secrets.ensure_key_file(tmp_path / "home")
    assert path.stat().st_mode & 0o777 == 0o600
    first = path.read_text()
    assert channel_secrets.ensure_key_file(tmp_path / "home").read_text() == first  # kept across runs
    ring = channel_secrets.keyring()
    assert ring is not None and ring.source == str(path)
    assert ring.open(ring.seal({"client_email": "a@b"})) == {"client_email": "a@b"}
