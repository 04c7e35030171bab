"""PostgreSQL: drop the ``varchar_pattern_ops`` copies Django adds beside the index of every
indexed ``CharField`` (``..._like``) on the generation rows (``ref``, ``session_ref``) and the
audit trail (``session_ref``).

They serve only ``LIKE 'prefix%'`` (``startswith``); nothing here filters these hashes by
prefix (equality, ranges and ordering use the plain btree; the admin's ``icontains`` search
reads neither). Every cleanup paid for them all the same: each generation bump is an update
that moves the indexed ``session_ref`` (never a HOT update, so every index of the row gets a
new entry) and each audit row is an insert. A full sweep over 1M sessions (400k cleaned)
spent about a fifth less CPU in PostgreSQL and wrote a fifth less WAL without them
(docs/benchmarks.md, "Bulk cleanup"). Other databases have no such index: nothing to do.
"""

from django.db import migrations

#: (model, field) whose ``_like`` index goes.
PATTERN_INDEXED = (
    ("PatientSessionState", "ref"),
    ("PatientSessionState", "session_ref"),
    ("CleanupEvent", "session_ref"),
)


def _like_indexes(apps, schema_editor):
    """(model, field, the name Django gave its ``_like`` index) on PostgreSQL; none elsewhere."""
    if schema_editor.connection.vendor != "postgresql":
        return []
    found = []
    for model_name, field_name in PATTERN_INDEXED:
        model = apps.get_model("patient_data", model_name)
        field = model._meta.get_field(field_name)
        name = schema_editor._create_index_name(
            model._meta.db_table, [field.column], suffix="_like"
        )
        found.append((model, field, name))
    return found


def drop(apps, schema_editor):
    for _model, _field, name in _like_indexes(apps, schema_editor):
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


def restore(apps, schema_editor):
    for model, field, _name in _like_indexes(apps, schema_editor):
        schema_editor.execute(schema_editor._create_like_index_sql(model, field))


class Migration(migrations.Migration):
    dependencies = [
        ("patient_data", "0007_audit_chain_head"),
    ]

    operations = [migrations.RunPython(drop, restore, elidable=False)]
