"""Read deployment settings from the environment (no third-party parser needed)."""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no).")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def local_secret_key(path: Path) -> str:
    """A random key generated once and kept in ``path`` (development only, never in git).

    Written to a private temporary file and linked into place, so processes starting together
    all read the complete key of the one that won.
    """
    if not path.exists():
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(64))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    return path.read_text().strip()


def env_number(name: str, default: float, *, integer: bool = False) -> float:
    """A number from the environment; a clear error for anything else."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ImproperlyConfigured(f"{name}={raw!r} is not {kind}.") from None


def postgres_pool(max_size: int, timeout: float) -> dict | None:
    """Options of Django's psycopg connection pool (``OPTIONS["pool"]``), or None for none.

    Under ASGI Django runs each request's synchronous work in a thread of its own, and each
    such thread opens its own connection: without a bound, a burst of requests opens more
    connections than the server allows and the excess fail. With the pool a request waits up
    to ``timeout`` seconds for one of ``max_size`` connections (per process).
    """
    if max_size <= 0:
        return None
    return {"min_size": min(2, max_size), "max_size": max_size, "timeout": timeout}


def database_from_url(url: str, base_dir: Path, *, pool: dict | None = None) -> dict:
    """Turn ``postgres://user:pw@host:port/name`` or ``sqlite:///path`` into a DATABASES entry
    (``pool``: the PostgreSQL connection pool's options, see :func:`postgres_pool`)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    options: dict = dict(parse_qsl(parts.query))
    if scheme in {"postgres", "postgresql", "pgsql"}:
        if pool is not None:
            options["pool"] = dict(pool)
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")) or "postgres",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": int(options.pop("conn_max_age", "0")),
            "OPTIONS": options,
        }
    if scheme == "sqlite":
        # sqlite:////abs/path.sqlite3 is absolute; sqlite:///rel/path is relative to the project.
        path = unquote(parts.path)[1:]
        if not path:
            return sqlite_database(base_dir / "var" / "db.sqlite3")
        return sqlite_database(Path(path) if Path(path).is_absolute() else base_dir / path)
    raise ImproperlyConfigured(
        f"DATABASE_URL scheme {scheme!r} is not supported: use postgres://... or sqlite:///path."
    )


def sqlite_database(path: Path) -> dict:
    """SQLite tuned for concurrent requests.

    IMMEDIATE transactions take the write lock at BEGIN, so the patient-data guard's
    read-compare-write sequence cannot interleave with a cleanup (see patient_data.guard).
    """
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        "TEST": {"NAME": path.with_name(path.stem + "-test.sqlite3")},
    }


def packaged_bootstrap_dir() -> Path | None:
    """Where XStatic-Bootstrap keeps its css/js, found without importing the package.

    Importing ``xstatic`` pulls in ``pkg_resources``; reading the distribution's file list
    does not.
    """
    from importlib import metadata

    try:
        files = metadata.files("XStatic-Bootstrap") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == "bootstrap.min.css":
            return Path(entry.locate()).parent.parent
    return None


def env_gc_thresholds(name: str, default: tuple[int, int, int]) -> tuple[int, int, int] | None:
    """Three positive integers for ``gc.set_threshold`` from ``name`` (``"700,10,100"``); an
    empty value leaves the interpreter's own (None). Zero, which turns a generation's
    collections off, is refused: cyclic garbage would never be freed."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    if not raw.strip():
        return None
    parts = [part.strip() for part in raw.split(",")]
    if len(parts) == 3 and all(part.isdigit() and int(part) > 0 for part in parts):
        return (int(parts[0]), int(parts[1]), int(parts[2]))
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not three positive integers (e.g. 700,10,100), nor empty."
    )
