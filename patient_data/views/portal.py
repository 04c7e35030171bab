"""The demo NCP portal: patient search and patient summary over synthetic patients.

Everything shown about a patient is first stored in the session through
``patient_data.patient_session`` (registered keys only) and then rendered from the session,
so a cleanup really takes it off the page.
"""

from __future__ import annotations

import secrets
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from patient_data import patient_session
from patient_data.decorators import login_required, patient_data_page
from patient_data.forms import PatientSearchForm
from patient_data.models import DemoPatient
from patient_data.prefetch import prefetch, prefetched

SEARCH_LIMIT = 50
ENTRY_KEYS = frozenset({"ref", "patient_id"})
#: The navbar links the staff dashboard for those who may watch it (``monitor.auth``).
MONITOR_PERMISSION = "patient_data.view_session_monitor"
CDA_PREFIX = "patient_cda_"
SUMMARY_KEYS = ("patient_medications", "patient_allergies", "patient_problems")


async def arender(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    """``render`` for async views: the user is resolved here, not lazily in the template.

    The ``user`` of the auth context processor loads synchronously, which an async view
    must not do.
    """
    user = await request.auser()
    # Staff only: a clinician's pages never pay the permission queries.
    can_monitor = user.is_staff and await user.ahas_perm(MONITOR_PERMISSION)
    context = {**context, "user": user, "can_monitor": can_monitor}
    return render(request, template, context, status=status)


def _matching(criteria: dict[str, str]) -> QuerySet[DemoPatient]:
    patients = DemoPatient.objects.all()
    for word in criteria["name"].split():
        patients = patients.filter(Q(given_name__icontains=word) | Q(family_name__icontains=word))
    if criteria["patient_id"]:
        patients = patients.filter(patient_id__icontains=criteria["patient_id"])
    if criteria["country"]:
        patients = patients.filter(country=criteria["country"])
    return patients


async def _patients_in_order(patient_ids: list[str]) -> list[DemoPatient]:
    found = {p.patient_id: p async for p in DemoPatient.objects.filter(patient_id__in=patient_ids)}
    return [found[pid] for pid in patient_ids if pid in found]


@login_required
@patient_data_page
async def patient_search(request: HttpRequest) -> HttpResponse:
    """Search by name, patient ID or country; the last search is kept in the session.

    The search is a POST and the results link to opaque references: no identifier or name
    ever stands in a URL (access logs, proxies, browser history).
    """
    if request.method == "POST":
        form = PatientSearchForm(request.POST)
        if form.is_valid():
            found = [p.patient_id async for p in _matching(form.cleaned_data)[:SEARCH_LIMIT]]
            await patient_session.astore(request, "prefill_search_form", form.cleaned_data)
            await patient_session.astore(request, "patient_search_results", _referenced(found))
            return redirect("portal:patient_search")
        status, entries = 400, None
    else:
        form = PatientSearchForm(initial=await request.session.aget("prefill_search_form"))
        status, entries = 200, _entries(await request.session.aget("patient_search_results"))
    results = None
    if entries is not None:
        refs = {entry["patient_id"]: entry["ref"] for entry in entries}
        results = await _patients_in_order(list(refs))
        for patient in results:
            patient.ref = refs[patient.patient_id]
    context = {"form": form, "results": results, "limit": SEARCH_LIMIT}
    return await arender(request, "patient_data/patient_search.html", context, status=status)


def _referenced(patient_ids: list[str]) -> list[dict[str, str]]:
    """The results of one search, each under a random reference of its own.

    Issued per search and kept in the clinician's session: the same patient gets another
    reference in another search or another clinician's, so access logs cannot link views of
    one patient, and no reference can be computed from an identifier.
    """
    return [{"ref": secrets.token_hex(16), "patient_id": pid} for pid in patient_ids]


def _entries(stored: Any) -> list[dict[str, str]] | None:
    """The last search's results as stored (None when there was none)."""
    if stored is None:
        return None
    return [entry for entry in stored if isinstance(entry, dict) and entry.keys() >= ENTRY_KEYS]


def _searched(stored: Any, ref: str) -> str | None:
    """The patient ID behind ``ref`` among the stored last search results, if there."""
    for entry in _entries(stored) or ():
        if secrets.compare_digest(entry["ref"], ref):
            return entry["patient_id"]
    return None


def _find_patient(patient_id: str) -> DemoPatient | None:
    try:
        return DemoPatient.objects.get(patient_id=patient_id)
    except DemoPatient.DoesNotExist:
        return None


def _patient_in_session_hop(session_data: dict[str, Any], ref: str) -> dict[Any, Any]:
    """The summary page's patient row, read in the session's load hop (``prefetch``)."""
    patient_id = _searched(session_data.get("patient_search_results"), ref)
    return {} if patient_id is None else {("patient", patient_id): _find_patient(patient_id)}


async def _from_last_search(request: HttpRequest, ref: str) -> DemoPatient:
    """The patient behind ``ref`` among the clinician's own last search results (else 404)."""
    patient_id = _searched(await request.session.aget("patient_search_results"), ref)
    if patient_id is None:
        raise Http404("No such patient in your last search.")
    fetch = partial(sync_to_async(_find_patient), patient_id)
    patient = await prefetched(request, ("patient", patient_id), fetch)
    if patient is None:
        raise Http404("No such patient.")
    return patient


def _cda_document(patient: DemoPatient) -> dict[str, Any]:
    """A stand-in for the patient's CDA document (synthetic, like everything here)."""
    return {
        "document_id": f"SYN-DOC-{patient.pk:06d}",
        "title": "Patient Summary (synthetic demo document)",
        "sections": ["Medication summary", "Allergies and intolerances", "Problem list"],
    }


async def _store_patient(request: HttpRequest, patient: DemoPatient) -> None:
    values: dict[str, Any] = {
        "current_patient_id": patient.patient_id,
        "patient_demographics": {
            "patient_id": patient.patient_id,
            "given_name": patient.given_name,
            "family_name": patient.family_name,
            "birth_date": patient.birth_date.isoformat(),
            "country": patient.country,
        },
        "patient_medications": patient.summary.get("medications", []),
        "patient_allergies": patient.summary.get("allergies", []),
        "patient_problems": patient.summary.get("problems", []),
        CDA_PREFIX + patient.patient_id: _cda_document(patient),
    }
    for key, value in values.items():
        await patient_session.astore(request, key, value)


@prefetch(_patient_in_session_hop)
@login_required
@patient_data_page
async def patient_summary(request: HttpRequest, ref: str) -> HttpResponse:
    """Load a synthetic patient of the last search into the session and show it from there."""
    patient = await _from_last_search(request, ref)
    await _store_patient(request, patient)
    session = request.session
    context = {
        "demographics": await session.aget("patient_demographics"),
        "document": await session.aget(CDA_PREFIX + patient.patient_id),
        **{key: await session.aget(key, []) for key in SUMMARY_KEYS},
    }
    return await arender(request, "patient_data/patient_summary.html", context)
