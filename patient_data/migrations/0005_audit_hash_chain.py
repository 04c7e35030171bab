"""The audit hash chain's columns (patient_data.audit_chain). SQLite rebuilds the table for
these and drops its triggers with it: they are installed again at the end."""

import django.utils.timezone
from django.db import migrations, models

from patient_data import append_only


class Migration(migrations.Migration):

    dependencies = [
        ('patient_data', '0004_audit_append_only_triggers'),
    ]

    operations = [
        migrations.AddField(
            model_name='cleanupevent',
            name='prev_hash',
            field=models.CharField(blank=True, default='', editable=False, max_length=64),
        ),
        migrations.AddField(
            model_name='cleanupevent',
            name='row_hash',
            field=models.CharField(blank=True, default='', editable=False, help_text='SHA-256 over prev_hash and this row (patient_data.audit_chain).', max_length=64),
        ),
        migrations.AlterField(
            model_name='cleanupevent',
            name='created_at',
            field=models.DateTimeField(db_index=True, default=django.utils.timezone.now, editable=False),
        ),
        migrations.RunPython(append_only.install, append_only.uninstall),
    ]
