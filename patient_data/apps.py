from django.apps import AppConfig


class PatientDataConfig(AppConfig):
    name = "patient_data"
    verbose_name = "Patient session protection"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in, user_logged_out
        from django.db.backends.signals import connection_created

        from patient_data import (
            append_only,
            checks,  # noqa: F401  (registers the system checks)
        )
        from patient_data.cleanup import on_user_logged_out
        from patient_data.login import on_user_logged_in

        user_logged_out.connect(on_user_logged_out, dispatch_uid="patient_data.logout")
        user_logged_in.connect(on_user_logged_in, dispatch_uid="patient_data.login")
        connection_created.connect(append_only.register, dispatch_uid="patient_data.append_only")
