"""Joins the migrations written side by side: the session index, ended sessions, the audit."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("patient_data", "0003_ended_sessions"),
        ("patient_data", "0003_session_index"),
        ("patient_data", "0005_audit_hash_chain"),
    ]

    operations = []
