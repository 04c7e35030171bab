"""Bulk cleanup of stored sessions: the backend contract, the selection rules and the
streaming sweep shared by ``cleanup_patient_sessions`` and ``startup_cleanup_patient_sessions``.
"""
