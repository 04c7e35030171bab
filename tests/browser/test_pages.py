"""What a clinician meets on the portal's pages: after-the-fact notices, friendly error pages,
WCAG 2.2 AA (axe-core scan of every page, contrast, focus, skip link, quiet live regions)
and the phone width."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import (
    PASSWORD,
    axe_violations,
    log_in,
    log_in_with_patient,
    screenshot,
    search,
)

pytestmark = pytest.mark.browser

PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


def _every_page(page, server):
    """Yield (name, page) for each kind of page, the page in that state."""
    page.goto("/accounts/login/")
    yield "login", page
    log_in(page)
    yield "search", page
    search(page)
    yield "search-results", page
    page.locator("[data-patient-data] tbody a").first.click()
    page.wait_for_url("**/patients/*/")
    yield "patient-summary", page
    page.goto("/patients/" + "0" * 32 + "/")
    yield "not-found", page
    page.goto("/patients/")
    page.get_by_role("button", name="Clear patient data").click()
    page.wait_for_selector("[data-session-messages] [role=status]")
    yield "after-cleanup", page


def test_every_page_passes_the_axe_core_scan(page, server, console):
    console.allow("status of 404")
    found = {}
    for name, current in _every_page(page, server):
        current.wait_for_load_state()
        found[name] = axe_violations(current)
    assert found == {name: [] for name in found}


def test_logout_leaves_a_notice_on_the_sign_in_page(page):
    log_in_with_patient(page)
    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()
    notice = page.locator("[data-session-notice]")
    assert re.fullmatch(r"Signed out at \d\d:\d\d UTC\.", notice.inner_text())
    page.reload()
    assert page.locator("[data-session-notice]").count() == 0


def test_a_stale_patient_link_gets_the_portal_404(page, console):
    console.allow("status of 404")
    log_in_with_patient(page)
    stale = page.url
    page.get_by_role("button", name="Clear patient data").click()
    page.wait_for_selector('[data-patient-data="cleared"]')
    response = page.goto(stale)
    assert response.status == 404
    assert page.get_by_role("heading", name="This patient is no longer loaded").is_visible()
    assert page.get_by_role("link", name="Search again").get_attribute("href") == "/patients/"
    assert "Signed in as clinician" in page.locator("nav").inner_text()
    screenshot(page, "error-404")


def test_a_form_from_before_a_new_sign_in_gets_the_portal_403(page, new_context, console):
    console.allow("status of 403")
    console.allow("status of 404")
    log_in(page)
    other_tab = page.context.new_page()
    other_tab.goto("/patients/")
    with other_tab.expect_navigation():
        other_tab.get_by_role("button", name="Log out").click()
    log_in(other_tab)  # a new sign-in: Django rotates the CSRF token
    page.get_by_label("Patient ID").fill("SYN-")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Search").click()
    assert navigation.value.status == 403
    assert page.get_by_role("heading", name="Your page was out of date").is_visible()
    assert "CSRF" not in page.content()
    screenshot(page, "error-403")
    assert axe_violations(page) == []
    with page.expect_navigation():
        page.locator("main").get_by_role("link", name="Patient search").click()
    assert page.url.endswith("/patients/")


def test_navbar_text_has_at_least_4_5_to_1_contrast(page):
    log_in(page)
    ratios = page.evaluate(
        """() => {
      const rgb = (c) => c.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number);
      const lum = (c) => {
        const [r, g, b] = rgb(c).map((v) => {
          v /= 255;
          return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
        });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
      };
      const bg = getComputedStyle(document.querySelector("nav")).backgroundColor;
      return Array.from(document.querySelectorAll("nav a, nav .navbar-text")).map((el) => {
        const [a, b] = [lum(getComputedStyle(el).color), lum(bg)].sort((x, y) => y - x);
        return (a + 0.05) / (b + 0.05);
      });
    }"""
    )
    assert ratios and min(ratios) >= 4.5


def _focus_ring(page) -> dict:
    return page.evaluate(
        """() => {
      const s = getComputedStyle(document.activeElement);
      return {style: s.outlineStyle, width: parseFloat(s.outlineWidth), color: s.outlineColor,
              text: document.activeElement.textContent.trim()};
    }"""
    )


def test_skip_link_comes_first_and_every_focus_ring_is_visible(page):
    log_in(page)
    page.wait_for_load_state()
    page.keyboard.press("Tab")
    ring = _focus_ring(page)
    assert ring["text"] == "Skip to main content" and ring["style"] == "solid"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.keyboard.press("Shift+Tab")  # back up into the navbar
    for _ in range(4):
        page.keyboard.press("Shift+Tab")
        if _focus_ring(page)["text"] == "Patient search":
            break
    ring = _focus_ring(page)
    assert ring["text"] == "Patient search"
    assert ring["style"] == "solid" and ring["width"] >= 2
    assert ring["color"] == "rgb(255, 255, 255)"  # white on the navy navbar


def test_focus_moves_to_the_message_after_a_cleanup(page):
    log_in_with_patient(page)
    page.locator("[data-patient-data] code").click()  # the reader's place is in the data
    page.keyboard.press("Control+Shift+C")
    page.wait_for_selector('[data-patient-data="cleared"]')
    assert page.evaluate("document.activeElement.getAttribute('role')") == "status"
    assert "Patient data cleared on request" in page.evaluate("document.activeElement.textContent")


def test_activity_monitor_announces_changes_of_state_not_the_clock(page):
    log_in_with_patient(page)
    monitor = page.locator("[data-session-monitor]")
    assert monitor.get_attribute("aria-live") is None
    assert monitor.locator("[aria-live]").count() == 0
    announcer = page.locator("[data-monitor-announcer]")
    page.wait_for_function("document.querySelector('[data-monitor=idle]').textContent !== ''")
    before = (announcer.inner_text(), monitor.inner_text())
    page.wait_for_timeout(2200)
    after = (announcer.inner_text(), monitor.inner_text())
    assert before[1] != after[1]  # the clock on screen moved...
    assert before[0] == after[0]  # ...and nothing was announced for it
    page.keyboard.press("Control+Shift+C")
    page.wait_for_function(
        "document.querySelector('[data-monitor-announcer]').textContent === 'No patient data held.'"
    )


def test_shortcut_hints_are_readable(page):
    log_in(page)
    sizes = page.locator(".shortcut-hint").evaluate_all(
        "els => els.map(el => parseFloat(getComputedStyle(el).fontSize))"
    )
    assert len(sizes) == 2 and min(sizes) >= 12


def _no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_phone_width_collapses_the_navbar_and_never_scrolls_sideways(new_context):
    page = new_context(**PHONE).new_page()
    page.goto("/accounts/login/")
    assert _no_sideways_scroll(page)
    log_in(page)
    assert not page.get_by_role("button", name="Log out").is_visible()
    for where in ("search", "results", "patient"):
        if where == "results":
            search(page)
        elif where == "patient":
            page.locator("[data-patient-data] tbody a").first.click()
            page.wait_for_url("**/patients/*/")
        assert _no_sideways_scroll(page), where
    assert not page.locator(".shortcut-hint").first.is_visible()
    screenshot(page, "widget-phone", full_page=False)
    assert axe_violations(page) == []
    page.get_by_role("button", name="Menu").click()
    page.wait_for_selector("#portal-nav.show")  # the menu has finished opening
    logout = page.get_by_role("button", name="Log out")
    assert _no_sideways_scroll(page)
    box = logout.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    screenshot(page, "navbar-phone-open", full_page=False)
    with page.expect_navigation():
        logout.click()
    assert page.url.endswith("/accounts/login/")


def test_keyboard_hints_show_on_a_desktop(page):
    log_in(page)
    assert page.locator(".shortcut-hint").first.is_visible()


def test_sign_in_page_is_not_cut_off_on_a_phone(new_context):
    page = new_context(**PHONE).new_page()
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("clinician")
    page.get_by_label("Password").fill(PASSWORD)
    assert page.get_by_role("button", name="Sign in").bounding_box()["width"] <= 390
