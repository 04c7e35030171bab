from django.apps import AppConfig


class MonitorConfig(AppConfig):
    """The live side: consumers, presence and the staff dashboard (built on the events
    that ``patient_data.cleanup`` publishes to ``PATIENT_EVENT_GROUP``)."""

    name = "monitor"
    verbose_name = "Live session monitor"
