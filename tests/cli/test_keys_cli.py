"""`tidings keys create | list | revoke` as an operator runs them."""
import os
import subprocess
import sys
from pathlib import Path

from litestar.testing import TestClient

from tidings.api.app import create_app
from tidings.engine.platform.config import Settings

TIDINGS = str(Path(sys.executable).parent / "tidings")


def _run(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIDINGS_HOME": str(settings.home), "TIDINGS_DATABASE_URL": settings.database_url}
    return subprocess.run([TIDINGS, *args], env=env, capture_output=True, text=True, timeout=60)


def test_create_list_revoke(settings):
    out = _run(settings, "keys", "create", "--workspace", "shop", "--label", "ci")
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("tk_") and len(key) > 30
    listing = _run(settings, "keys", "list").stdout
    assert "shop" in listing and key[:11] in listing and key not in listing and "live" in listing
    with TestClient(create_app(settings)) as client:
        assert client.put("/v1/users/u", json={}, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert _run(settings, "keys", "revoke", key[:11]).returncode == 0
        assert client.get("/v1/users/u", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert "revoked" in _run(settings, "keys", "list", "--workspace", "shop").stdout
    bad = _run(settings, "keys", "revoke", "tk_doesnotexist")
    assert bad.returncode == 2 and "no live key" in bad.stderr
