"""The dashboard in a real browser (Playwright driving Debian's Chromium) against a real local
server: a lead signs in, opens /dashboard, picks the months, and sees published counts and
suppressed ones (`<11`) but no case reference or personal detail; the same tables with
JavaScript off; and axe-core finds no serious or critical accessibility violation.

With PEERLINE_SCREENSHOTS=1 the test also saves a desktop screenshot of the dashboard to
docs/screenshots/dashboard.png (see docs/make_screenshots.py)."""
from __future__ import annotations

import os
import re
from datetime import datetime, timezone

import pytest

from tests.test_console import LEAD, add_staff
from tests.test_console_browser import CHROMIUM, SHOTS, _serious, browser, server  # noqa: F401 (fixtures)
from tests.test_dashboard import CANARY, seed

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (see .ci/run)", allow_module_level=True)

ROLES = ["Nurse", "Nurse", "Physician", "Resident", "Nurse", "Pharmacist"]


@pytest.fixture
def seeded(ctx):
    """A lead, and 39 cases: NCH 24 and RRMC 14 in January 2026, one more at NCH in February
    (small: `<11`, and January hidden with it; NCH 25 and RRMC 14 published); canaries in
    every personal field."""
    add_staff(ctx, *LEAD, role="lead", name="Lee Lead")
    made = seed(ctx, n_nch=24, n_rrmc=14, role_of=lambda i: ROLES[i % len(ROLES)])
    ctx.clock.pin(datetime(2026, 3, 10, tzinfo=timezone.utc))
    return made


def sign_in_and_open_dashboard(page, server):
    page.goto(f"{server}/console/login")
    page.get_by_label("Email").fill(LEAD[0])
    page.get_by_label("Password").fill(LEAD[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server}/console")
    page.goto(f"{server}/dashboard")
    assert page.url == f"{server}/dashboard"
    page.get_by_label("From (YYYY-MM)").fill("2026-01")
    page.get_by_label("To (YYYY-MM)").fill("2026-02")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/dashboard?from=2026-01&to=2026-02*")


def cell(page, caption_start: str, group: str) -> str:
    """The value shown for `group` in the table whose caption starts with `caption_start`."""
    caption = page.locator("caption", has_text=re.compile("^" + re.escape(caption_start)))
    table = page.locator("table").filter(has=caption)
    row = table.first.locator("tbody tr").filter(has=page.locator("th", has_text=re.compile(f"^{re.escape(group)}$")))
    return row.first.locator("td.num").inner_text().strip()


def tables_of(page) -> list[str]:
    return [t.inner_text() for t in page.locator("table").all()]


def check_numbers_and_secrets(page, cases) -> None:
    assert cell(page, "Requests by institution", "NCH") == "25"          # published
    assert cell(page, "Requests by institution", "RRMC") == "14"
    assert cell(page, "Requests by month", "2026-02") == "<11"           # small
    assert cell(page, "Requests by month", "2026-01") == "<11"           # hidden, else 39 - 1 gives February back
    assert cell(page, "Requests by month", "All") == "39"
    html, text = page.content(), page.locator("body").inner_text()
    for secret in list(CANARY.values()) + ["5550137929", "qzx9"]:
        assert secret.lower() not in html.lower(), secret
    assert not re.search(r"PS-\d", html), re.search(r"PS-\d+", html).group(0)
    for case in cases:
        assert case.case_id not in text and case.case_id.split("-")[1] not in html


def test_a_lead_sees_published_and_suppressed_counts_and_no_person(server, browser, seeded):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in_and_open_dashboard(page, server)
    assert page.get_by_role("heading", level=1).inner_text() == "Dashboard"
    check_numbers_and_secrets(page, seeded)


def test_the_dashboard_shows_the_same_tables_with_javascript_off(server, browser, seeded):
    with_js = browser.new_context().new_page()
    sign_in_and_open_dashboard(with_js, server)
    page = browser.new_context(java_script_enabled=False).new_page()
    sign_in_and_open_dashboard(page, server)
    check_numbers_and_secrets(page, seeded)
    assert len(tables_of(page)) > 10 and tables_of(page) == tables_of(with_js)


def test_no_serious_or_critical_accessibility_violation_on_the_dashboard(server, browser, seeded):
    axe_module = pytest.importorskip("axe_playwright_python.sync_playwright",
                                     reason="axe-playwright-python (axe-core) is not installed")
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in_and_open_dashboard(page, server)
    assert _serious(axe_module.Axe().run(page)) == []
    if os.environ.get("PEERLINE_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)
