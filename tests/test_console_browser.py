"""The console in a real browser (Playwright driving Debian's Chromium) against a real local
server: sign in, filter, open a case, approve it, see the offer SMS in the outbox; the same
with JavaScript off; and axe-core finds no serious or critical accessibility violation.

With PEERLINE_SCREENSHOTS=1 the test also saves phone and desktop screenshots of the case
list and a case page to docs/screenshots/ (see docs/make_screenshots.py)."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.test_console import NCH_COORD, add_staff, new_case

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (see .ci/run)", allow_module_level=True)


@pytest.fixture
def server(app):
    """The app served by a real WSGI server on 127.0.0.1, in a thread."""
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    thread.join(5)


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def cases(client, ctx, roster, run_worker):
    """Two NCH cases (one of them a crisis) and one at RRMC."""
    return [new_case(client, ctx, run_worker), new_case(client, ctx, run_worker, urgency="Crisis"),
            new_case(client, ctx, run_worker, institution="RRMC")]


def sign_in(page, server, email, password):
    page.goto(f"{server}/console")
    assert page.url.startswith(f"{server}/console/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server}/console")


def approve_first_case(page, server, ctx, case):
    page.get_by_label("Status").select_option("New")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/console?status=New*")
    assert "Zebulon" not in page.content()
    page.get_by_role("link", name=case.case_id).click()
    page.wait_for_url(f"{server}/console/cases/{case.case_id}")
    assert page.get_by_role("heading", level=1).inner_text().startswith(case.case_id)
    page.get_by_role("button", name="Show contact details").click()
    assert page.get_by_text("+15550100123").is_visible()
    page.get_by_role("button", name="Approve").click()
    page.wait_for_url(f"{server}/console/cases/{case.case_id}")
    assert "approved and offered to" in page.get_by_role("status").inner_text()
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Offered"
    supporter = next(s for s in ctx.store.supporters() if s.record_id == case.assigned_supporter)
    offer_sms = [m for m in ctx.db.outbox_list() if m.recipient == supporter.phone and case.ref in m.body]
    assert len(offer_sms) == 1 and f"YES {case.ref}" in offer_sms[0].body


def test_sign_in_filter_open_and_approve_in_a_browser(server, browser, ctx, cases, runner):
    add_staff(ctx, *NCH_COORD, institutions=["NCH"], name="Noa Coordinator")
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in(page, server, *NCH_COORD)
    rows = page.locator("tbody tr")
    assert rows.count() == 2 and cases[1].case_id in rows.first.inner_text()      # crisis first, NCH only
    assert "988" in page.content()
    approve_first_case(page, server, ctx, cases[0])
    outbox = runner.invoke(args=["outbox"]).output
    assert f"YES {cases[0].ref}" in outbox
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")
    page.goto(f"{server}/console/cases/{cases[0].case_id}")
    assert "/console/login" in page.url


def test_the_console_works_with_javascript_off(server, browser, ctx, cases):
    add_staff(ctx, *NCH_COORD, institutions=["NCH"], name="Noa Coordinator")
    page = browser.new_context(java_script_enabled=False).new_page()
    sign_in(page, server, *NCH_COORD)
    approve_first_case(page, server, ctx, cases[0])


def test_no_serious_or_critical_accessibility_violation(server, browser, ctx, cases):
    axe_module = pytest.importorskip("axe_playwright_python.sync_playwright",
                                     reason="axe-playwright-python (axe-core) is not installed")
    axe = axe_module.Axe()
    add_staff(ctx, *NCH_COORD, institutions=["NCH"], name="Noa Coordinator")
    shots = os.environ.get("PEERLINE_SCREENSHOTS") == "1"
    for width, height, label in ((390, 844, "phone"), (1280, 900, "desktop")):
        page = browser.new_context(viewport={"width": width, "height": height}).new_page()
        page.goto(f"{server}/console/login")
        checked = {"login": _serious(axe.run(page))}
        sign_in(page, server, *NCH_COORD)
        checked["case list"] = _serious(axe.run(page))
        if shots:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / f"case-list-{label}.png"), full_page=True)
        page.goto(f"{server}/console/cases/{cases[0].case_id}")
        checked["case page"] = _serious(axe.run(page))
        if shots:
            page.screenshot(path=str(SHOTS / f"case-page-{label}.png"), full_page=True)
        page.context.close()
        assert checked == {"login": [], "case list": [], "case page": []}, (label, checked)


def _serious(results) -> list[str]:
    assert results.response["testEngine"]["name"] == "axe-core"      # axe really ran on the page
    return [f"{v['id']} ({v['impact']}): {v['help']}" for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical")]
