"""The audit table is append-only in the database itself, not only in the ORM.

Triggers (migration 0004, installed again by 0005 after SQLite rebuilt the table) refuse every
UPDATE, and every DELETE or TRUNCATE unless this transaction unlocked the table through
:func:`unlocked`. Raw SQL, ``_base_manager``,
``manage.py flush`` and a SQL console all meet the trigger. The application never unlocks:
the only unlocking caller is the test suite's database teardown (see tests/conftest.py), and
a retention purge, if one is ever added, must go through here and write its own audit row.

On SQLite the trigger asks a function this module registers on every connection Django opens;
a connection without it (the sqlite3 shell) fails with "no such function": refused as well.
On PostgreSQL it reads a transaction-local setting.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections, transaction

UNLOCK_FUNCTION = "patient_data_audit_unlocked"
UNLOCK_SETTING = "patient_data.audit_unlocked"
_FLAG = "_patient_audit_unlocked"

TABLE = "patient_data_cleanupevent"
MESSAGE = f"{TABLE} is append-only"
#: Trigger names per database; ``tests/test_audit_append_only.py`` checks they exist.
TRIGGERS = {
    "sqlite": ("patient_data_audit_no_update", "patient_data_audit_no_delete"),
    "postgresql": ("patient_data_audit_no_change", "patient_data_audit_no_truncate"),
}
_CREATE = {
    "sqlite": [
        f"""CREATE TRIGGER patient_data_audit_no_update BEFORE UPDATE ON {TABLE}
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
        f"""CREATE TRIGGER patient_data_audit_no_delete BEFORE DELETE ON {TABLE}
        WHEN NOT {UNLOCK_FUNCTION}()
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
    ],
    "postgresql": [
        f"""CREATE OR REPLACE FUNCTION patient_data_audit_append_only() RETURNS trigger AS $$
        BEGIN
            IF TG_OP <> 'UPDATE'
               AND coalesce(current_setting('{UNLOCK_SETTING}', true), '') = 'on' THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'insufficient_privilege';
        END
        $$ LANGUAGE plpgsql""",
        f"""CREATE TRIGGER patient_data_audit_no_change BEFORE UPDATE OR DELETE ON {TABLE}
        FOR EACH ROW EXECUTE FUNCTION patient_data_audit_append_only()""",
        f"""CREATE TRIGGER patient_data_audit_no_truncate BEFORE TRUNCATE ON {TABLE}
        FOR EACH STATEMENT EXECUTE FUNCTION patient_data_audit_append_only()""",
    ],
}
_DROP = {
    "sqlite": [f"DROP TRIGGER IF EXISTS {name}" for name in TRIGGERS["sqlite"]],
    "postgresql": [
        *(f"DROP TRIGGER IF EXISTS {name} ON {TABLE}" for name in TRIGGERS["postgresql"]),
        "DROP FUNCTION IF EXISTS patient_data_audit_append_only()",
    ],
}


def install(apps: Any, schema_editor: Any) -> None:
    """Migration step: (re)create the triggers. Run again after any migration that rebuilds
    the table: SQLite drops a table's triggers with the table."""
    uninstall(apps, schema_editor)
    for statement in _CREATE.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement)


def uninstall(apps: Any, schema_editor: Any) -> None:
    """Migration step: drop the triggers (reversing :func:`install`)."""
    for statement in _DROP.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement)


def register(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` receiver: gives SQLite connections the trigger's function."""
    if connection.vendor == "sqlite":
        connection.connection.create_function(
            UNLOCK_FUNCTION, 0, lambda: int(getattr(connection, _FLAG, False))
        )


@contextmanager
def unlocked(using: str = "default") -> Iterator[None]:
    """A transaction in which audit rows may be deleted (never updated)."""
    connection = connections[using]
    with transaction.atomic(using=using):
        if connection.vendor == "postgresql":
            # Transaction-local, and this may be a savepoint in a longer transaction: switched
            # off again on the way out (a rolled-back savepoint reverts it by itself).
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config(%s, 'on', true)", [UNLOCK_SETTING])
                yield
                cursor.execute("SELECT set_config(%s, 'off', true)", [UNLOCK_SETTING])
            return
        setattr(connection, _FLAG, True)
        try:
            yield
        finally:
            setattr(connection, _FLAG, False)
