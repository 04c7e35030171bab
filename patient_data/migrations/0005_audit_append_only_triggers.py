"""Database triggers: the audit table refuses UPDATE, and DELETE/TRUNCATE unless unlocked
(see patient_data.append_only)."""

from django.db import migrations

TABLE = "patient_data_cleanupevent"
MESSAGE = "patient_data_cleanupevent is append-only"

SQLITE_FORWARD = [
    f"""CREATE TRIGGER patient_data_audit_no_update BEFORE UPDATE ON {TABLE}
    BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
    f"""CREATE TRIGGER patient_data_audit_no_delete BEFORE DELETE ON {TABLE}
    WHEN NOT patient_data_audit_unlocked()
    BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS patient_data_audit_no_update",
    "DROP TRIGGER IF EXISTS patient_data_audit_no_delete",
]
POSTGRESQL_FORWARD = [
    f"""CREATE OR REPLACE FUNCTION patient_data_audit_append_only() RETURNS trigger AS $$
    BEGIN
        IF TG_OP <> 'UPDATE'
           AND coalesce(current_setting('patient_data.audit_unlocked', true), '') = 'on' THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'insufficient_privilege';
    END
    $$ LANGUAGE plpgsql""",
    f"""CREATE TRIGGER patient_data_audit_no_change BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION patient_data_audit_append_only()""",
    f"""CREATE TRIGGER patient_data_audit_no_truncate BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION patient_data_audit_append_only()""",
]
POSTGRESQL_BACKWARD = [
    f"DROP TRIGGER IF EXISTS patient_data_audit_no_truncate ON {TABLE}",
    f"DROP TRIGGER IF EXISTS patient_data_audit_no_change ON {TABLE}",
    "DROP FUNCTION IF EXISTS patient_data_audit_append_only()",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("patient_data", "0004_audit_hash_chain")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRESQL_FORWARD}),
            _run({"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRESQL_BACKWARD}),
        )
    ]
