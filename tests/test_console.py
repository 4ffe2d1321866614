"""The staff console: accounts (`flask staff`), sign-in and its protections, the case list and
case page, and actions through the same workflows as the CLI; on SQLite, PostgreSQL and the
fake Airtable. Browser tests are in test_console_browser.py."""
from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
from werkzeug.security import generate_password_hash

from integrations.database import StaffStore
from tests.test_intake import submit
from tests.test_offers import new_case

LEAD = ("lead@example.org", "lead-password-123")
NCH_COORD = ("nch.coord@example.org", "nch-password-1234")
RRMC_COORD = ("rrmc.coord@example.org", "rrmc-password-123")


def add_staff(ctx, email, password, role="coordinator", institutions=(), name="Staff Member"):
    return StaffStore(ctx.db).add(email=email, name=name, role=role, institutions=list(institutions),
                                  password_hash=generate_password_hash(password), now=ctx.now())


@pytest.fixture
def staff(ctx):
    add_staff(ctx, *LEAD, role="lead", name="Lee Lead")
    add_staff(ctx, *NCH_COORD, institutions=["NCH"], name="Noa Coordinator")
    add_staff(ctx, *RRMC_COORD, institutions=["RRMC"], name="Ray Coordinator")


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def sign_in(client, email, password, *, next_path=""):
    page = client.get("/console/login")
    return client.post("/console/login", data={"csrf_token": csrf_of(page.get_data(as_text=True)),
                                               "email": email, "password": password, "next": next_path})


def post_action(client, case_id, action, **data):
    page = client.get(f"/console/cases/{case_id}")
    assert page.status_code == 200, page.status_code
    return client.post(f"/console/cases/{case_id}/{action}",
                       data={"csrf_token": csrf_of(page.get_data(as_text=True)), **data})




def move_clock(ctx, by: timedelta):
    ctx.clock.advance(by)


# ---- flask staff ----

def test_staff_add_list_disable_and_the_errors_that_stop_them(runner, ctx):
    ok = runner.invoke(args=["staff", "add", "Lead@Example.org", "--name", "Lee Lead", "--role", "lead",
                             "--password-stdin"], input="a-long-password-1\n")
    assert ok.exit_code == 0, ok.output
    assert "Added lead lead@example.org" in ok.output and "a-long-password-1" not in ok.output
    prompted = runner.invoke(args=["staff", "add", "c@example.org", "--name", "Cy", "--role", "coordinator",
                                   "--institution", "NCH", "--institution", "rrmc"],
                             input="another-password\nanother-password\n")
    assert prompted.exit_code == 0, prompted.output
    failures = {
        "duplicate email": (["lead@example.org", "--name", "X", "--role", "lead"], "already exists"),
        "unknown role": (["x@example.org", "--name", "X", "--role", "admin"], "Unknown role 'admin'"),
        "unknown institution": (["x@example.org", "--name", "X", "--role", "coordinator", "--institution", "ZZZ"],
                                "Unknown institution code ZZZ"),
        "coordinator without one": (["x@example.org", "--name", "X", "--role", "coordinator"], "at least one"),
        "short password": (["x@example.org", "--name", "X", "--role", "lead"], "too short"),
    }
    for why, (args, message) in failures.items():
        result = runner.invoke(args=["staff", "add", *args, "--password-stdin"], input="short\n")
        assert result.exit_code != 0 and message in result.output, (why, result.output)
    listing = runner.invoke(args=["staff", "list"]).output
    assert "lead@example.org" in listing and "c@example.org" in listing and "NCH RRMC" in listing
    assert "scrypt" not in listing and "pbkdf2" not in listing and "x@example.org" not in listing
    account = StaffStore(ctx.db).by_email("c@example.org")
    assert account.password_hash.startswith(("scrypt:", "pbkdf2:")) and "another" not in account.password_hash
    assert runner.invoke(args=["staff", "disable", "c@example.org"]).exit_code == 0
    assert "disabled" in runner.invoke(args=["staff", "list"]).output
    missing = runner.invoke(args=["staff", "disable", "nobody@example.org"])
    assert missing.exit_code != 0 and "No staff account" in missing.output


# ---- sign-in ----

def test_without_a_session_pages_send_to_sign_in_and_json_gets_401(client, ctx, staff):
    for path in ("/console", "/console/cases/PS-1234"):
        page = client.get(path)
        assert page.status_code == 302 and "/console/login" in page.headers["Location"]
        api = client.get(path, headers={"Accept": "application/json"})
        assert api.status_code == 401 and api.get_json() == {"error": "sign in required"}
    login = client.get("/console/login").get_data(as_text=True)
    posted = client.post("/console/cases/PS-1234/close", data={"csrf_token": csrf_of(login)})
    assert posted.status_code == 303 and "/console/login" in posted.headers["Location"]


def test_sign_in_starts_a_new_session_with_safe_cookie_flags(client, ctx, staff):
    client.get("/console/login")
    before = client.get_cookie("session").value
    answer = sign_in(client, *LEAD)
    assert answer.status_code == 303 and answer.headers["Location"] == "/console"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert client.get_cookie("session").value != before
    # The old cookie's CSRF token is gone with the old session.
    with client.session_transaction() as s:
        assert "csrf_token" not in s
    assert "Lee Lead" in client.get("/console").get_data(as_text=True)


def test_cookie_is_secure_when_the_public_address_is_https(tmp_path):
    from app import create_app
    from integrations import database
    app = create_app({"DATA_DIR": str(tmp_path / "var"), "SECRET_KEY": "x", "RATELIMIT_ENABLED": "false",
                      "PUBLIC_BASE_URL": "https://peerline.example.org"})
    try:
        ctx = app.extensions["peerline"]
        add_staff(ctx, *LEAD, role="lead")
        client = app.test_client()
        answer = sign_in(client, *LEAD)
        assert answer.status_code == 303 and "Secure" in answer.headers["Set-Cookie"]
    finally:
        database.dispose_engines()


def test_a_wrong_email_and_a_wrong_password_get_the_same_answer(client, ctx, staff):
    wrong_password = sign_in(client, LEAD[0], "not-the-password")
    wrong_email = sign_in(client, "nobody@example.org", LEAD[1])
    assert wrong_password.status_code == wrong_email.status_code == 401
    message = "That email and password do not match an active account."
    assert message in wrong_password.get_data(as_text=True) and message in wrong_email.get_data(as_text=True)
    assert client.get("/console").status_code == 302


def test_repeated_failures_slow_that_address_down_but_never_for_good(client, ctx, staff):
    start = ctx.now()
    at = lambda seconds: ctx.clock.pin(start + timedelta(seconds=seconds))  # noqa: E731
    waits, t = [], 0
    for n in range(1, 13):
        at(t)
        assert sign_in(client, LEAD[0], "wrong-guess").status_code == 401
        until = StaffStore(ctx.db).blocked_until(LEAD[0], ctx.now())
        waits.append((until - ctx.now()).total_seconds())
        # During the wait even the right password is refused, and the refusal adds nothing.
        refused = sign_in(client, *LEAD)
        assert refused.status_code == 429 and "Too many attempts" in refused.get_data(as_text=True)
        t += waits[-1]
    assert waits[:5] == [2, 4, 8, 16, 32]
    assert max(waits) == 15 * 60                          # capped: the lead waits at most 15 minutes
    # Another address is not slowed by these failures, whether or not it has an account.
    assert sign_in(client.application.test_client(), *NCH_COORD).status_code == 303
    at(t)
    assert sign_in(client, *LEAD).status_code == 303     # after the wait the right password works
    assert StaffStore(ctx.db).blocked_until(LEAD[0], ctx.now()) is None


def test_unknown_addresses_are_slowed_the_same_way(client, ctx, staff):
    sign_in(client, "nobody@example.org", "x")
    assert sign_in(client, "nobody@example.org", "x").status_code == 429


@pytest.fixture
def limited(overrides):
    overrides["RATELIMIT_ENABLED"] = "true"
    return overrides


def test_sign_in_attempts_are_rate_limited_per_client(limited, client, ctx, staff):
    codes = []
    for n in range(12):
        codes.append(sign_in(client, f"guess{n}@example.org", "x").status_code)
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]


def test_a_session_ends_after_the_idle_time_and_activity_keeps_it(client, ctx, staff):
    assert ctx.program.console.idle_minutes == 30
    sign_in(client, *LEAD)
    start = ctx.now()
    for minutes in (20, 40, 60):                           # a request every 20 minutes: still signed in
        ctx.clock.pin(start + timedelta(minutes=minutes))
        assert client.get("/console").status_code == 200
    ctx.clock.pin(start + timedelta(minutes=91))           # 31 minutes idle
    answer = client.get("/console")
    assert answer.status_code == 302 and "/console/login" in answer.headers["Location"]


def test_sign_out_ends_the_session_even_for_a_copied_cookie(client, ctx, staff):
    sign_in(client, *LEAD)
    copied = client.get_cookie("session").value
    page = client.get("/console").get_data(as_text=True)
    assert client.post("/console/logout", data={"csrf_token": csrf_of(page)}).status_code == 303
    assert client.get("/console").status_code == 302
    client.set_cookie("session", copied)
    assert client.get("/console").status_code == 302


def test_a_disabled_account_is_signed_out_at_its_next_request(client, ctx, staff, runner):
    sign_in(client, *NCH_COORD)
    assert client.get("/console").status_code == 200
    assert runner.invoke(args=["staff", "disable", NCH_COORD[0]]).exit_code == 0
    assert client.get("/console").status_code == 302
    assert sign_in(client, *NCH_COORD).status_code == 401


# ---- the case list ----

def test_the_list_puts_crisis_and_overdue_first_and_filters(client, ctx, roster, run_worker, staff):
    routine = new_case(client, ctx, run_worker)
    crisis = new_case(client, ctx, run_worker, urgency="Crisis")
    move_clock(ctx, timedelta(hours=1))
    old = new_case(client, ctx, run_worker, institution="RRMC")
    ctx.store.update_case(old.case_id, review_due=ctx.now() - timedelta(hours=2))   # overdue
    other = new_case(client, ctx, run_worker, institution="SBMC", role="")           # Needs attention
    sign_in(client, *LEAD)
    html = client.get("/console").get_data(as_text=True)
    order = [m for m in re.findall(r"PS-\d+", html)]
    assert order.index(crisis.case_id) < order.index(old.case_id) < order.index(routine.case_id)
    assert "overdue by 2 h 0 min" in html and "Crisis" in html and "Problems" in html
    assert re.search(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d\d \w{3} \d\d:\d\d E[SD]T", html)   # program time zone
    only_rrmc = client.get("/console?institution=RRMC").get_data(as_text=True)
    assert old.case_id in only_rrmc and routine.case_id not in only_rrmc
    attention = client.get("/console?status=Needs+attention").get_data(as_text=True)
    assert other.case_id in attention and routine.case_id not in attention
    # A coordinator sees their own hospital's cases only.
    client.post("/console/logout", data={"csrf_token": csrf_of(html)})
    sign_in(client, *RRMC_COORD)
    mine = client.get("/console").get_data(as_text=True)
    assert old.case_id in mine and routine.case_id not in mine and other.case_id not in mine
    assert client.get("/console?institution=NCH").get_data(as_text=True).count("PS-") == 0


def test_a_coordinator_asking_for_another_hospitals_case_gets_404(client, ctx, roster, run_worker, staff):
    case = new_case(client, ctx, run_worker)          # NCH
    sign_in(client, *RRMC_COORD)
    assert client.get(f"/console/cases/{case.case_id}").status_code == 404
    token = csrf_of(client.get("/console").get_data(as_text=True))
    for action in ("approve", "close", "contact"):
        assert client.post(f"/console/cases/{case.case_id}/{action}", data={"csrf_token": token}).status_code == 404
    assert ctx.store.find_case(case_id=case.case_id).status == "New"
    assert all(e.actor == "peerline" for e in ctx.store.list_events(case.case_id))


def test_a_post_without_its_csrf_token_changes_nothing(client, ctx, roster, run_worker, staff):
    assert ctx.store is not None and client.application.config.get("WTF_CSRF_ENABLED", True)
    case = new_case(client, ctx, run_worker)
    sign_in(client, *NCH_COORD)
    for data in ({}, {"csrf_token": "forged"}):
        answer = client.post(f"/console/cases/{case.case_id}/close", data=data)
        assert answer.status_code == 400 and "Nothing was changed" in answer.get_data(as_text=True)
    assert ctx.store.find_case(case_id=case.case_id).status == "New"
    assert client.post(f"/console/cases/{case.case_id}/contact", data={}).status_code == 400
    assert "Contact details shown" not in str(ctx.store.list_events(case.case_id))


# ---- the case page and its actions ----

def test_contact_details_show_only_on_request_and_that_is_an_event(client, ctx, roster, run_worker, staff):
    case = new_case(client, ctx, run_worker)
    sign_in(client, *NCH_COORD)
    page = client.get(f"/console/cases/{case.case_id}").get_data(as_text=True)
    assert "Zebulon" not in page and "0100123" not in page.replace(" ", "")
    assert "Surgery" in page and "Perioperative" in page and "Show contact details" in page
    shown = post_action(client, case.case_id, "contact")
    assert shown.status_code == 200 and shown.headers["Cache-Control"] == "no-store"
    html = shown.get_data(as_text=True)
    assert "Zebulon" in html and "+15550100123" in html and "Text message" in html
    [event] = [e for e in ctx.store.list_events(case.case_id) if e.event == "Contact details shown in the console"]
    assert event.actor == NCH_COORD[0]


def test_approve_offers_the_best_candidate_by_sms_with_the_staff_member_as_actor(client, ctx, roster, run_worker,
                                                                                staff):
    case = new_case(client, ctx, run_worker)
    sign_in(client, *NCH_COORD)
    page = client.get(f"/console/cases/{case.case_id}").get_data(as_text=True)
    assert "The best candidate" in page and "Reviewers notified" in page
    kinds = {m.kind for m in ctx.db.ledger_rows(case.case_id)}
    assert kinds and all(f">{kind}<" in page for kind in kinds)      # the messages, by kind (never text)
    answer = post_action(client, case.case_id, "approve", supporter="")
    assert answer.status_code == 303
    shown = client.get(answer.headers["Location"]).get_data(as_text=True)
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Offered" and "approved and offered to" in shown
    supporter = next(s for s in ctx.store.supporters() if s.record_id == case.assigned_supporter)
    assert any(m.recipient == supporter.phone and case.ref in m.body for m in ctx.db.outbox_list())
    approved = [e for e in ctx.store.list_events(case.case_id) if e.event.startswith("Approved")]
    assert [e.actor for e in approved] == [NCH_COORD[0]]
    assert "offer-1" in shown and f"Offered to {supporter.name}" in shown


def test_approve_a_chosen_supporter_and_a_colleague_needs_the_box(client, ctx, roster, run_worker, staff):
    case = new_case(client, ctx, run_worker, for_whom="Colleague")
    sign_in(client, *NCH_COORD)
    chosen = next(s for s in ctx.store.supporters() if s.name == "Skyler Nakamura")
    refused = post_action(client, case.case_id, "approve", supporter=chosen.record_id)
    assert "agreed to be contacted" in client.get(refused.headers["Location"]).get_data(as_text=True)
    assert ctx.store.find_case(case_id=case.case_id).status == "New"
    post_action(client, case.case_id, "approve", supporter=chosen.record_id, colleague_agreed="yes")
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Offered" and case.assigned_supporter == chosen.record_id


def test_reassign_withdraw_and_close_go_through_the_workflows(client, ctx, roster, run_worker, staff):
    case = new_case(client, ctx, run_worker)
    sign_in(client, *NCH_COORD)
    post_action(client, case.case_id, "approve")
    first = ctx.store.find_case(case_id=case.case_id).assigned_supporter
    other = next(s for s in ctx.store.supporters() if s.name == "Hayden Moreau")
    post_action(client, case.case_id, "reassign", supporter=other.record_id)
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Offered" and case.assigned_supporter == other.record_id != first
    assert [o.status for o in ctx.db.offers_for_case(case.case_id)] == ["withdrawn", "open"]
    post_action(client, case.case_id, "withdraw")
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Withdrawn"
    assert [o.status for o in ctx.db.offers_for_case(case.case_id)] == ["withdrawn", "withdrawn"]
    post_action(client, case.case_id, "close")
    assert ctx.store.find_case(case_id=case.case_id).status == "Closed"
    mine = [e.event for e in ctx.store.list_events(case.case_id) if e.actor == NCH_COORD[0]]
    assert mine[0].startswith("Approved") and mine[1].startswith("Reassigned") and mine[2:] == ["Withdrawn: the requester no longer wants support", "Closed"]


# ---- confidentiality ----

CANARY = {"requester_name": "Qzx9Name", "requester_phone": "+1 555 013 7929", "requester_email": "qzx9mail@example.org",
          "department": "Qzx9Dept", "specialty": "Qzx9Spec"}


def _canaries(text: str) -> list[str]:
    flat = re.sub(r"[\s()-]", "", text)
    return [v for v in CANARY.values() if v.lower() in text.lower()] + (["phone"] if "5550137929" in flat else [])


def test_canaries_appear_only_on_the_case_page_of_that_hospitals_coordinator(client, ctx, roster, run_worker,
                                                                               staff, caplog):
    caplog.set_level(logging.DEBUG)
    case = new_case(client, ctx, run_worker, **CANARY)          # NCH
    urls, pages = [], {}

    def visit(method, path, **kw):
        answer = getattr(client, method)(path, **kw)
        urls.append(path)
        urls.append(answer.headers.get("Location", ""))
        return answer

    for who in (RRMC_COORD, LEAD, NCH_COORD):
        sign_in(client, *who)
        listing = visit("get", "/console").get_data(as_text=True)
        visit("get", "/console?status=all&institution=NCH")
        page = visit("get", f"/console/cases/{case.case_id}")
        token = csrf_of(listing)
        shown = visit("post", f"/console/cases/{case.case_id}/contact", data={"csrf_token": token})
        pages[who[0]] = (listing, page.get_data(as_text=True), shown.get_data(as_text=True), shown.status_code)
        visit("post", f"/console/cases/{case.case_id}/approve", data={"csrf_token": token})
        client.post("/console/logout", data={"csrf_token": token})
    rrmc_listing, rrmc_page, rrmc_shown, rrmc_code = pages[RRMC_COORD[0]]
    assert rrmc_code == 404 and not _canaries(rrmc_listing + rrmc_page + rrmc_shown)
    for email in (NCH_COORD[0], LEAD[0]):
        listing, page, shown, code = pages[email]
        assert code == 200 and not _canaries(listing)
        assert set(_canaries(page)) == {"Qzx9Dept", "Qzx9Spec"}           # free text on the case page only
        assert len(_canaries(shown)) == 5                                 # and contact details once asked
    for url in urls:
        assert not _canaries(url), url
    for record in caplog.records:
        assert not _canaries(record.getMessage()), record.getMessage()
    for event in ctx.store.list_events(case.case_id):
        assert not _canaries(event.event) and not _canaries(event.actor)


def test_no_page_or_log_carries_a_password_or_a_session_id(client, ctx, roster, run_worker, staff, caplog, app):
    caplog.set_level(logging.DEBUG)
    case = new_case(client, ctx, run_worker)
    sign_in(client, NCH_COORD[0], "a-wrong-password-xyz")
    move_clock(ctx, timedelta(seconds=3))                # past the wait after one failure
    answers = [sign_in(client, *NCH_COORD)]
    cookie = client.get_cookie("session").value
    token = app.session_interface.get_signing_serializer(app).loads(cookie)["_user_id"]
    answers += [client.get("/console"), client.get(f"/console/cases/{case.case_id}"),
                post_action(client, case.case_id, "contact"), post_action(client, case.case_id, "approve")]
    texts = [a.get_data(as_text=True) + str(a.headers.get("Location")) for a in answers]
    texts += [r.getMessage() for r in caplog.records]
    texts += [e.event + e.actor for e in ctx.store.list_events(case.case_id)]
    assert len(token) > 30
    for text in texts:
        for secret in (NCH_COORD[1], "a-wrong-password-xyz", cookie, token):
            assert secret not in text
    # Only a digest of the session token is stored.
    import sqlalchemy as sa
    with ctx.db.engine.connect() as conn:
        stored = [r[0] for r in conn.execute(sa.text("SELECT token_hash FROM staff_sessions"))]
    assert stored and token not in stored


# ---- every store ----

@pytest.fixture(params=["postgres", "airtable"])
def store_overrides(request, overrides, mocked):
    if request.param == "postgres":
        return {**overrides, "DATABASE_URL": request.getfixturevalue("pg_url")}
    from integrations import airtable
    from tests.fake_airtable import FakeAirtable
    fake = FakeAirtable(token="patConsole")
    fake.add_base("appConsole000001")
    fake.install(mocked, "https://api.airtable.test")
    airtable.init_base(airtable.AirtableCaseStore("patConsole", "appConsole000001", api_url="https://api.airtable.test",
                                                  throttle=airtable.Throttle(0)))
    return {**overrides, "AIRTABLE_API_KEY": "patConsole", "AIRTABLE_BASE_ID": "appConsole000001",
            "AIRTABLE_API_URL": "https://api.airtable.test"}


@pytest.fixture
def any_store_app(store_overrides):
    from app import create_app
    from integrations import database
    application = create_app(store_overrides)
    application.config.update(TESTING=True)
    ctx = application.extensions["peerline"]
    ctx.enqueue = lambda inbox_id, **kw: None
    if hasattr(ctx.store, "throttle"):
        from integrations import airtable
        ctx.store.throttle = airtable.Throttle(0)
    yield application
    database.dispose_engines()


def test_the_console_works_on_postgresql_and_airtable(any_store_app):
    from tests.conftest import drain
    from cli import read_roster_csv
    from config import settings as settings_module
    app = any_store_app
    ctx, client = app.extensions["peerline"], app.test_client()
    ctx.store.import_roster(read_roster_csv(settings_module.ROOT / "config" / "sample_roster.csv")[0])
    add_staff(ctx, *NCH_COORD, institutions=["NCH"])
    assert submit(client).status_code == 303
    drain(ctx)
    [case] = ctx.store.list_cases()
    assert sign_in(client, *NCH_COORD).status_code == 303
    assert case.case_id in client.get("/console").get_data(as_text=True)
    shown = post_action(client, case.case_id, "contact").get_data(as_text=True)
    assert "Zebulon" in shown
    post_action(client, case.case_id, "approve")
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Offered"
    events = ctx.store.list_events(case.case_id)
    assert {e.event.split(",")[0] for e in events if e.actor == NCH_COORD[0]} == {
        "Contact details shown in the console", "Approved"}
    assert "offer-1" in client.get(f"/console/cases/{case.case_id}").get_data(as_text=True)


def test_cases_show_hides_contact_details_unless_asked_and_records_asking(client, ctx, roster, run_worker, runner):
    case = new_case(client, ctx, run_worker)
    plain = runner.invoke(args=["cases", "show", case.ref])
    assert plain.exit_code == 0 and case.case_id in plain.output and "Reviewers notified" in plain.output
    assert "Zebulon" not in plain.output and "0100123" not in plain.output and "Surgery" not in plain.output
    assert re.search(r"Review due:\s+\w{3} \d\d \w{3} \d\d:\d\d E[SD]T", plain.output)
    assert "Contact details shown" not in str(ctx.store.list_events(case.case_id))
    shown = runner.invoke(args=["cases", "show", case.case_id, "--contact"])
    assert "Zebulon" in shown.output and "+15550100123" in shown.output
    [event] = [e for e in ctx.store.list_events(case.case_id) if e.event.startswith("Contact details shown")]
    assert event.actor == "cli"
    assert runner.invoke(args=["cases", "show", "PS-0000"]).exit_code != 0


def test_reviewers_are_pointed_at_the_case_in_the_console_on_the_embedded_store(client, ctx, roster, staff,
                                                                                 run_worker):
    """Not "run flask cases list", which cannot say who asked or how to reach them."""
    case = new_case(client, ctx, run_worker)
    link = f"{ctx.settings['PUBLIC_BASE_URL']}/console/cases/{case.case_id}"
    to_reviewers = [m for m in ctx.db.outbox_list() if m.case_id == case.case_id and link in m.body]
    assert "email" in {m.channel for m in to_reviewers}
    assert not any("flask cases list" in m.body for m in ctx.db.outbox_list())
    path = link.replace(ctx.settings["PUBLIC_BASE_URL"], "")
    assert client.get(path).status_code == 302                      # signed out: to the sign-in page
    sign_in(client, *NCH_COORD, next_path=path)
    assert case.case_id in client.get(path).get_data(as_text=True)
