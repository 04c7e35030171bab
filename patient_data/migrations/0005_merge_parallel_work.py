"""Joins the migrations written side by side for the index, ended sessions and the audit."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("patient_data", "0003_ended_sessions"),
        ("patient_data", "0003_session_index"),
        ("patient_data", "0004_audit_append_only_triggers"),
    ]

    operations = []
