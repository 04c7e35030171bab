"""The audit trail is append-only and carries no values and no raw keys."""

from __future__ import annotations

import pytest
from django.contrib.admin.sites import site

from patient_data.models import AppendOnlyError, CleanupEvent


@pytest.fixture
def event(with_patient_data):
    with_patient_data.post("/api/clear-patient-session/")
    return CleanupEvent.objects.get()


def test_rows_hold_counts_names_and_a_keyed_hash(event, with_patient_data):
    assert event.items_cleared == 3
    assert event.keys == ["current_patient_id", "patient_cda_*", "patient_summary"]
    assert with_patient_data.session_key not in event.session_ref
    row = str(CleanupEvent.objects.values().get())
    assert "SYN" not in row and "ClinicalDocument" not in row


def test_rows_cannot_be_changed_or_deleted(event):
    event.reason = "rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        CleanupEvent.objects.all().update(reason="rewritten")
    with pytest.raises(AppendOnlyError):
        CleanupEvent.objects.all().delete()
    assert CleanupEvent.objects.get().reason == "manual_cleanup"


async def test_async_queryset_writes_are_refused_too():
    with pytest.raises(AppendOnlyError):
        await CleanupEvent.objects.all().aupdate(reason="x")
    with pytest.raises(AppendOnlyError):
        await CleanupEvent.objects.all().adelete()


def test_admin_is_read_only(event, rf, admin_user):
    model_admin = site._registry[CleanupEvent]
    request = rf.get("/")
    request.user = admin_user
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, event)
    assert not model_admin.has_delete_permission(request, event)
    assert model_admin.has_view_permission(request, event)


def test_admin_changelist_renders(event, admin_client):
    response = admin_client.get("/admin/patient_data/cleanupevent/")
    assert response.status_code == 200
    assert b"manual_cleanup" in response.content
