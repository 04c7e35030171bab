"""Settings from the environment: the embedded default, DATABASE_URL, and safe production."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from ncp_asgi.env import database_from_url, env_bool

ROOT = Path(__file__).resolve().parent.parent
PROD_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "k" * 20 + "-production-like-secret-for-the-deploy-check-0123456789",
    "ALLOWED_HOSTS": "ncp.example.test",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
}


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    clean.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env, "NCP_VAR_DIR": env.get("NCP_VAR_DIR", str(ROOT / "var"))},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_postgres_url():
    db = database_from_url("postgres://ncp:s%40cret@db.internal:5433/ncp", Path("/srv"))
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "ncp",
        "ncp",
        "s@cret",
        "db.internal",
        "5433",
    )


def test_sqlite_urls():
    assert database_from_url("sqlite:////tmp/x.sqlite3", Path("/srv"))["NAME"] == Path(
        "/tmp/x.sqlite3"
    )
    relative = database_from_url("sqlite:///var/x.sqlite3", Path("/srv"))
    assert relative["NAME"] == Path("/srv/var/x.sqlite3")
    assert relative["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_unknown_database_scheme_is_a_clear_error():
    with pytest.raises(ImproperlyConfigured, match="mysql"):
        database_from_url("mysql://x/y", Path("/srv"))


def test_booleans(monkeypatch):
    monkeypatch.setenv("X_FLAG", "off")
    assert env_bool("X_FLAG", True) is False
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG"):
        env_bool("X_FLAG", True)


def test_production_refuses_the_development_secret(tmp_path):
    result = _manage("check", env={"DEBUG": "0", "NCP_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "DEBUG=0 needs a real SECRET_KEY" in result.stderr


def test_deploy_check_raises_nothing_of_ours(tmp_path):
    result = _manage("check", "--deploy", env={**PROD_ENV, "NCP_VAR_DIR": str(tmp_path)})
    output = result.stdout + result.stderr
    assert "patient_data." not in output, output
    assert result.returncode == 0, output
