"""SigV4: every request is signed with a live key pair of the workspace, recomputed by the server."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tidings.engine.platform.db import make_engine
from tidings.engine.workspaces.tables import access_keys
from tests.pinpoint.conftest import KeyPair, client_for
from tests.pinpoint.signing import signed_request

TIDINGS = str(Path(sys.executable).parent / "tidings")
BODY = b'{"ChannelType": "EMAIL", "Address": "ann@example.com"}'


def _refusal(response, code: str) -> str:
    assert response.status_code == 403, response.text
    assert response.headers["x-amzn-errortype"] == code
    return response.json()["message"]


def test_a_correctly_signed_request_passes(running_api, acme_key):
    response = signed_request(running_api, acme_key, "PUT", "/v1/apps/acme/endpoints/e1", BODY)
    assert response.status_code == 202 and response.json()["Message"] == "Accepted"


def test_wrong_secret_is_refused(running_api, acme_key):
    message = _refusal(signed_request(running_api, acme_key, "GET", "/v1/apps", b"", secret="x" * 40),
                       "InvalidSignatureException")
    assert "signature we calculated does not match" in message
    client = client_for(running_api, acme_key, secret="not-the-secret")
    with pytest.raises(Exception) as caught:
        client.get_apps()
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_stale_and_future_dates_are_refused(running_api, acme_key):
    now = datetime.now(UTC)
    stale = signed_request(running_api, acme_key, "GET", "/v1/apps", b"", when=now - timedelta(minutes=6))
    assert _refusal(stale, "InvalidSignatureException").startswith("Signature expired")
    future = signed_request(running_api, acme_key, "GET", "/v1/apps", b"", when=now + timedelta(minutes=6))
    assert _refusal(future, "InvalidSignatureException").startswith("Signature not yet current")
    within = signed_request(running_api, acme_key, "GET", "/v1/apps", b"", when=now - timedelta(minutes=4))
    assert within.status_code == 200


def test_a_body_changed_after_signing_is_refused_and_nothing_is_written(running_api, acme_key):
    tampered = BODY.replace(b"ann@", b"eve@")
    response = signed_request(running_api, acme_key, "PUT", "/v1/apps/acme/endpoints/e1", BODY, send_body=tampered)
    _refusal(response, "InvalidSignatureException")
    with pytest.raises(Exception) as caught:
        client_for(running_api, acme_key).get_endpoint(ApplicationId="acme", EndpointId="e1")
    assert caught.value.response["Error"]["Code"] == "NotFoundException"


def test_unsigned_and_unknown_keys_are_refused(running_api, acme_key):
    import httpx

    _refusal(httpx.get(running_api.pinpoint_url + "/v1/apps"), "MissingAuthenticationTokenException")
    stranger = KeyPair("acme", "TDGSNOSUCHKEY0000000", acme_key.secret)
    _refusal(signed_request(running_api, stranger, "GET", "/v1/apps", b""), "UnrecognizedClientException")
    garbled = httpx.get(running_api.pinpoint_url + "/v1/apps", headers={"Authorization": "AWS4-HMAC-SHA256 nonsense"})
    _refusal(garbled, "IncompleteSignatureException")


def _tidings(settings, *args):
    env = {**os.environ, "TIDINGS_HOME": str(settings.home), "TIDINGS_DATABASE_URL": settings.database_url}
    return subprocess.run([TIDINGS, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_cli_key_pair_works_is_sealed_and_revokes(settings, running_api):
    out = _tidings(settings, "keys", "create", "--workspace", "shop", "--pinpoint")
    assert out.returncode == 0, out.stderr
    id_line, secret_line = out.stdout.strip().splitlines()[-2:]
    assert id_line.startswith("AWS_ACCESS_KEY_ID=") and secret_line.startswith("AWS_SECRET_ACCESS_KEY=")
    key = KeyPair("shop", id_line.split("=", 1)[1], secret_line.split("=", 1)[1])
    client = client_for(running_api, key)
    assert client.get_apps()["ApplicationsResponse"]["Item"][0]["Id"] == "shop"
    db = make_engine(settings.database_url)
    with db.connect() as conn:
        stored = conn.execute(select(access_keys.c.sealed_secret)).scalar_one()
    db.dispose()
    assert key.secret not in stored and stored.startswith("fernet:")
    assert key.access_key_id in _tidings(settings, "keys", "list", "--workspace", "shop").stdout
    assert _tidings(settings, "keys", "revoke", key.access_key_id).returncode == 0
    with pytest.raises(Exception) as caught:
        client.get_apps()
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert "revoked" in _tidings(settings, "keys", "list", "--workspace", "shop").stdout


def test_cli_refuses_a_pinpoint_key_without_an_encryption_key(settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_ENCRYPTION_KEY")}
    env.update(TIDINGS_HOME=str(settings.home), TIDINGS_DATABASE_URL=settings.database_url)
    out = subprocess.run([TIDINGS, "keys", "create", "--workspace", "shop", "--pinpoint"], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and "no encryption key" in out.stderr and "AWS_SECRET" not in out.stdout


def test_cli_admin_key_pair(settings, running_api):
    out = _tidings(settings, "keys", "create", "--admin", "--pinpoint")
    assert out.returncode == 0, out.stderr
    id_line, secret_line = out.stdout.strip().splitlines()[-2:]
    key = KeyPair(None, id_line.split("=", 1)[1], secret_line.split("=", 1)[1])
    assert client_for(running_api, key).create_app(CreateApplicationRequest={"Name": "made"})[
        "ApplicationResponse"]["Id"] == "made"
    assert "*" in _tidings(settings, "keys", "list").stdout
    refused = _tidings(settings, "keys", "create", "--admin")
    assert refused.returncode == 2 and "--pinpoint" in refused.stderr
