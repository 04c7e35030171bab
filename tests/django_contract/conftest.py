"""Collected only under tests.django_contract.settings (scripts/django_session_suite)."""

from django.conf import settings

collect_ignore_glob = [] if "sessions_tests" in settings.INSTALLED_APPS else ["test_*.py"]
