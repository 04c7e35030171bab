"""Database triggers: the audit table refuses UPDATE, and DELETE/TRUNCATE unless unlocked
(see patient_data.append_only)."""

from django.db import migrations

from patient_data import append_only


class Migration(migrations.Migration):
    dependencies = [("patient_data", "0003_audit_client_hint")]

    operations = [migrations.RunPython(append_only.install, append_only.uninstall)]
