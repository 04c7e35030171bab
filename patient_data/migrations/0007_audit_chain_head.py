"""The audit chain's head in a one-row table (patient_data.audit_chain), set from the last
chained row of an existing trail."""

from django.db import migrations, models


def set_head(apps, schema_editor):
    using = schema_editor.connection.alias
    events = apps.get_model("patient_data", "CleanupEvent").objects.using(using)
    last = events.order_by("-id").values_list("row_hash", "prev_hash").first()
    row_hash, prev_hash = last or ("", "")
    apps.get_model("patient_data", "AuditChainHead").objects.using(using).update_or_create(
        id=1, defaults={"row_hash": row_hash, "prev_hash": prev_hash}
    )


class Migration(migrations.Migration):
    dependencies = [
        ("patient_data", "0006_merge_parallel_work"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditChainHead",
            fields=[
                ("id", models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
                ("row_hash", models.CharField(blank=True, default="", max_length=64)),
                ("prev_hash", models.CharField(blank=True, default="", max_length=64)),
            ],
        ),
        migrations.RunPython(set_head, migrations.RunPython.noop),
    ]
