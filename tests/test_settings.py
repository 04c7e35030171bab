"""Settings from the environment: the embedded default, DATABASE_URL, and safe production."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from ncp_asgi.env import database_from_url, env_bool, env_gc_thresholds

ROOT = Path(__file__).resolve().parent.parent
PROD_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "k" * 20 + "-production-like-secret-for-the-deploy-check-0123456789",
    "ALLOWED_HOSTS": "ncp.example.test",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
}


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # Only what the test gives: nothing of the deployment or of tests/settings.py leaks in.
    inherited = {"DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"}
    clean = {k: v for k, v in os.environ.items() if k not in inherited}
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


def _settings(names: str, env: dict[str, str]) -> list[str]:
    wanted = names.split()
    code = f"from django.conf import settings as s; print(*[getattr(s, n) for n in {wanted}])"
    result = _manage("shell", "-v", "0", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.mark.parametrize(
    "key",
    [
        None,
        "short",
        "dev-only-insecure-key-do-not-use-in-production-0123456789abcdef",
        "django-insecure-" + "x" * 50,
    ],
)
def test_production_refuses_a_missing_short_or_published_secret(tmp_path, key):
    env = {"DEBUG": "0", "NCP_VAR_DIR": str(tmp_path)}
    result = _manage("check", env={**env, "SECRET_KEY": key} if key else env)
    assert result.returncode != 0
    assert "set SECRET_KEY (at least 50 random characters" in result.stderr


def test_nothing_set_means_production_and_the_server_refuses_to_start(tmp_path):
    result = _manage("check", env={"NCP_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "DEBUG is off (the default)" in result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_development_mode_is_explicit_and_keeps_a_generated_local_key(tmp_path):
    env = {"DEBUG": "1", "NCP_VAR_DIR": str(tmp_path)}
    first = _settings("DEBUG SECRET_KEY", env)
    assert first[0] == "True"
    assert len(first[1]) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert _settings("SECRET_KEY", env) == [first[1]]
    other = _settings("SECRET_KEY", {**env, "NCP_VAR_DIR": str(tmp_path / "other")})
    assert other != [first[1]]


def test_production_defaults_hsts_reach_opt_in_and_browser_close_sessions(tmp_path):
    names = "DEBUG SECURE_HSTS_SECONDS SECURE_HSTS_INCLUDE_SUBDOMAINS SECURE_HSTS_PRELOAD"
    names += " SESSION_EXPIRE_AT_BROWSER_CLOSE SESSION_COOKIE_SECURE"
    env = {**PROD_ENV, "NCP_VAR_DIR": str(tmp_path)}
    assert _settings(names, env) == ["False", "31536000", "False", "False", "True", "True"]
    chosen = {
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
        "SECURE_HSTS_PRELOAD": "1",
        "SESSION_EXPIRE_AT_BROWSER_CLOSE": "0",
    }
    assert _settings(names, {**env, **chosen})[2:5] == ["True", "True", "False"]


def test_deploy_check_raises_nothing_of_ours(tmp_path):
    result = _manage("check", "--deploy", env={**PROD_ENV, "NCP_VAR_DIR": str(tmp_path)})
    output = result.stdout + result.stderr
    assert "patient_data." not in output, output
    assert result.returncode == 0, output
    assert "System check identified no issues" in output, output


def test_the_deploy_check_still_asks_for_hsts_behind_the_inline_middleware(tmp_path):
    """Django's HSTS check looks for its SecurityMiddleware by path; the inline subclass in
    MIDDLEWARE must not make it pass unseen."""
    env = {**PROD_ENV, "NCP_VAR_DIR": str(tmp_path), "SECURE_HSTS_SECONDS": "0"}
    result = _manage("check", "--deploy", env=env)
    output = result.stdout + result.stderr
    assert "security.W004" in output, output


def test_missing_security_middleware_is_reported_by_path_or_subclass(settings):
    from patient_data import checks

    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "Csrf" not in m]
    assert [w.id for w in checks.check_required_middleware()] == ["patient_data.W063"]
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.middleware.csrf.CsrfViewMiddleware"]
    assert checks.check_required_middleware() == []


FREEZE_COUNT = (
    "import gc; before = gc.get_freeze_count(); import ncp_asgi.asgi; "
    "print(gc.get_freeze_count() - before)"
)


def _frozen_after_import(tmp_path: Path, **env: str) -> int:
    """How many more objects ``gc.freeze`` holds once a server process has imported the
    application (the interpreter starts with a few frozen)."""
    return int(_in_server_process(tmp_path, FREEZE_COUNT, **env))


THRESHOLDS = "import ncp_asgi.asgi, gc; print(*gc.get_threshold(), sep=',')"


def _in_server_process(tmp_path: Path, code: str, **env: str) -> str:
    """What ``code`` prints in a fresh interpreter with the production settings."""
    inherited = {"DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"}
    clean = {k: v for k, v in os.environ.items() if k not in inherited}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **PROD_ENV, "NCP_VAR_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_server_collects_its_oldest_generation_ten_times_less_often(tmp_path):
    assert _in_server_process(tmp_path, THRESHOLDS) == "700,10,100"
    custom = _in_server_process(tmp_path, THRESHOLDS, NCP_GC_THRESHOLDS="2000, 20, 50")
    assert custom == "2000,20,50"
    assert _in_server_process(tmp_path, THRESHOLDS, NCP_GC_THRESHOLDS="") == "700,10,10"


@pytest.mark.parametrize("raw", ["700,10", "700,0,100", "a,b,c", "700,10,100,1", "-1,10,10"])
def test_gc_thresholds_that_are_not_three_positive_integers_are_refused(monkeypatch, raw):
    monkeypatch.setenv("NCP_GC_THRESHOLDS", raw)
    with pytest.raises(ImproperlyConfigured, match="NCP_GC_THRESHOLDS"):
        env_gc_thresholds("NCP_GC_THRESHOLDS", (700, 10, 100))


def test_the_server_s_start_up_objects_are_frozen_unless_turned_off(tmp_path):
    assert _frozen_after_import(tmp_path) > 10_000  # the default
    assert _frozen_after_import(tmp_path, NCP_GC_FREEZE_AT_START="0") == 0
