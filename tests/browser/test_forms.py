"""Every form of the portal, submitted by Chromium: no 403, no console error on any page."""

from __future__ import annotations

import pytest

from tests.browser.conftest import (
    PASSWORD,
    log_in,
    log_in_with_patient,
    open_patient,
    screenshot,
    search,
    session_key,
)

pytestmark = pytest.mark.browser


def _statuses(page) -> list[tuple[str, int]]:
    """Every document response the page receives from now on (method, status)."""
    seen: list[tuple[str, int]] = []
    page.on(
        "response",
        lambda r: (
            seen.append((r.request.method, r.status))
            if r.request.resource_type == "document"
            else None
        ),
    )
    return seen


def test_login_form_signs_the_clinician_in(page):
    statuses = _statuses(page)
    log_in(page)
    assert page.get_by_text("Signed in as clinician").is_visible()
    assert ("POST", 302) in statuses
    assert all(status < 400 for _, status in statuses)
    screenshot(page, "portal-search-empty")


def test_wrong_password_is_refused_on_the_page(page):
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("clinician")
    page.get_by_label("Password").fill(PASSWORD + "-wrong")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Wrong username or password."


def test_search_form_posts_and_shows_the_results(page):
    log_in(page)
    statuses = _statuses(page)
    search(page)
    assert ("POST", 302) in statuses and all(status < 400 for _, status in statuses)
    assert page.locator("[data-patient-data] tbody tr").count() >= 5
    screenshot(page, "portal-search-results")


def test_a_search_result_opens_the_patient_summary(page, server):
    log_in(page)
    search(page)
    patient_id = open_patient(page)
    assert page.locator("[data-patient-data] code").inner_text() == patient_id
    assert server.patient_keys(session_key(page))
    screenshot(page, "portal-patient-summary")


@pytest.mark.parametrize("where", ["search page", "patient page"])
def test_logout_form_ends_the_session(page, server, where):
    if where == "search page":
        log_in(page)
        search(page)
    else:
        log_in_with_patient(page)
    key = session_key(page)
    statuses = _statuses(page)
    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()
    assert all(status < 400 for _, status in statuses)
    page.wait_for_url("**/accounts/login/")
    assert server.session(key) is None
    assert server.audit(key)[-1]["reason"] == "logout"
