"""After the first contact (workflows/followup.py): contact made and a referral from the
supporter's page, the requester's private /r/ page (988 first), a supporter who could not reach
the person, withdrawing with a reason, `flask cases refer|withdraw`, `flask jobs run`, and the
automatic close after close_after_days, once however often its job runs. Embedded defaults
(SQLite, outbox), PostgreSQL, and the fake Airtable."""
from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest

from tests.test_offers import (AVERY, LINK, accepted, approve, clock, events, new_case, sent,  # noqa: F401
                               sms, supporter, worker)

REQUESTER = "+15550100123"
R_LINK = re.compile(r"http://localhost:5000/r/\S+")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def post(client, path, **form):
    page = client.get(path).get_data(as_text=True)
    return client.post(path, data={"csrf_token": CSRF.search(page).group(1), **form})


def resource_id(ctx, name, institution):
    return next(r.record_id for r in ctx.store.resources() if r.name == name and r.institution == institution)


def jobs(runner, *args, code=0):
    result = runner.invoke(args=["jobs", "run", *args])
    assert result.exit_code == code, result.output
    return result.output


def test_contact_referral_resources_page_and_close_after_the_days_once(client, ctx, roster, run_worker, runner,
                                                                        clock):
    case, path = accepted(client, ctx, run_worker, runner)          # a request from NCH, by text message
    page = client.get(path).get_data(as_text=True)
    assert "I have reached them" in page and "I could not reach them" in page
    # The requester's institution's resources and the shared ones; no other hospital's.
    assert "Chaplaincy" in page and "Clinician Counselling Service" in page
    assert f'value="{resource_id(ctx, "Chaplaincy", "RRMC")}"' not in page
    assert f'value="{resource_id(ctx, "Chaplaincy", "NCH")}"' in page

    clock.advance(timedelta(hours=5))
    answer = post(client, path, action="contact")
    assert answer.status_code == 200 and "contact is recorded" in answer.get_data(as_text=True)
    contacted_at = clock.now()
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Contacted" and case.contact_made_at == contacted_at
    post(client, path, action="contact")                           # twice: recorded once
    assert events(ctx, case).count("Contact made (supporter's page)") == 1

    clock.advance(timedelta(minutes=10))
    chosen = [resource_id(ctx, "Chaplaincy", "NCH"), resource_id(ctx, "Clinician Counselling Service", "")]
    answer = post(client, path, action="refer", resource=chosen)
    assert answer.status_code == 200 and "on their way" in answer.get_data(as_text=True)
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Referred" and sorted(case.tier3_referral.split(",")) == sorted(chosen)
    assert "Referred to Chaplaincy, Clinician Counselling Service" in events(ctx, case)
    assert "Resources link sent to the requester by SMS" in events(ctx, case)
    told = sent(ctx, to=REQUESTER)[-1]
    link = R_LINK.search(told.body).group(0)
    # The link and the program's name only (and the 988 line every message to them carries).
    assert told.body == (f"Clinician Peer Support Network: the resources we talked about are on this private "
                            f"page: {link} In a crisis, call or text 988.")

    resources = client.get(link.replace("http://localhost:5000", ""))
    html = resources.get_data(as_text=True)
    assert resources.status_code == 200 and resources.headers["Cache-Control"] == "no-store"
    assert html.index("988") < html.index("Chaplaincy") < html.index("Clinician Counselling Service")
    assert "+1 555 010 2001" in html and "https://counselling.example.org" in html and "Mon-Fri 08:00-18:00" in html
    assert "+1 555 010 2000" not in html and "Zebulon" not in html and "<script" not in html
    assert "Resources link opened" in events(ctx, case)

    # Closes itself close_after_days (14) after contact, once, however often the job runs.
    clock.pin(contacted_at + timedelta(days=14) - timedelta(minutes=1))
    jobs(runner, "auto_close")
    assert ctx.store.find_case(case_id=case.case_id).status == "Referred"
    clock.pin(contacted_at + timedelta(days=14, hours=3))
    jobs(runner, "auto_close")
    jobs(runner, "auto_close")
    jobs(runner, "all")
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Closed" and case.closed_at == clock.now()
    assert events(ctx, case).count("Closed automatically, 14 days after contact") == 1
    assert client.get(path).status_code == 410                     # the supporter's link ended
    assert client.get(link.replace("http://localhost:5000", "")).status_code == 200   # theirs still works


def test_could_not_reach_goes_to_the_next_supporter_and_ends_the_link(client, ctx, roster, run_worker, runner,
                                                                       clock):
    case, path = accepted(client, ctx, run_worker, runner)
    first = ctx.store.find_case(case_id=case.case_id).assigned_supporter
    answer = post(client, path, action="unreachable")
    assert answer.status_code == 200 and "Thank you for letting us know" in answer.get_data(as_text=True)
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Offered" and case.assigned_supporter not in ("", first)
    assert [o.status for o in ctx.db.offers_for_case(case.case_id)] == ["no_contact", "open"]
    assert any(e.endswith("could not reach the person (offer 1): offering the next supporter")
               for e in events(ctx, case))
    assert client.get(path).status_code == 410


def test_a_post_without_the_pages_csrf_token_changes_nothing(client, ctx, roster, run_worker, runner, clock):
    case, path = accepted(client, ctx, run_worker, runner)
    client.get(path)
    assert client.post(path, data={"action": "contact"}).status_code == 400
    assert ctx.store.find_case(case_id=case.case_id).status == "Assigned"


def test_cases_refer_and_withdraw_from_the_command_line(client, ctx, roster, run_worker, runner, clock):
    case, path = accepted(client, ctx, run_worker, runner, preferred_contact="Email", requester_email="z@example.org")
    bad = runner.invoke(args=["cases", "refer", case.case_id, "--resource", "Chaplaincy", "--resource", "Yoga"])
    assert bad.exit_code != 0 and "'Yoga'" in bad.output
    assert ctx.store.find_case(case_id=case.case_id).status == "Assigned"
    done = runner.invoke(args=["cases", "refer", case.ref, "--resource", "chaplaincy"])
    assert done.exit_code == 0 and "Referred to Chaplaincy" in done.output and "by email" in done.output
    [mail] = [m for m in sent(ctx, to="z@example.org") if "resources" in m.subject]
    assert "/r/" in mail.body and "988" in mail.body
    assert not [m for m in sent(ctx, to=REQUESTER, channel="sms") if "/r/" in m.body]

    refused = runner.invoke(args=["cases", "withdraw", case.case_id, "--reason", "colleague-declined"])
    assert refused.exit_code != 0 and "not asked for by a colleague" in refused.output
    result = runner.invoke(args=["cases", "withdraw", case.case_id, "--reason", "duplicate"])
    assert result.exit_code == 0, result.output
    assert "Withdrawn: a duplicate request" in events(ctx, case)
    link = R_LINK.search(mail.body).group(0).replace("http://localhost:5000", "")
    assert client.get(path).status_code == 410 and client.get(link).status_code == 410
    assert runner.invoke(args=["cases", "withdraw", case.case_id]).exit_code != 0


def test_a_colleague_who_declines_withdraws_the_request(client, ctx, roster, run_worker, runner, clock):
    case = new_case(client, ctx, run_worker, for_whom="Colleague")
    refused = runner.invoke(args=["cases", "refer", case.case_id, "--resource", "Chaplaincy"])
    assert refused.exit_code != 0 and "New" in refused.output           # not before the colleague agreed
    approve(runner, case, "--colleague-agreed")
    result = runner.invoke(args=["cases", "withdraw", case.case_id, "--reason", "colleague-declined"])
    assert result.exit_code == 0, result.output
    assert ctx.store.find_case(case_id=case.case_id).status == "Withdrawn"
    assert "Withdrawn: the colleague declined" in events(ctx, case)
    assert [o.status for o in ctx.db.offers_for_case(case.case_id)] == ["withdrawn"]


def test_jobs_run_lists_the_jobs_and_refuses_an_unknown_name(runner, ctx):
    listing = jobs(runner)
    assert "auto_close" in listing and "hourly at :23" in listing and "poll_approvals" in listing
    assert "expire_offers" in listing and "every minute" in listing
    out = jobs(runner, "nonesuch", code=1)
    assert "No job named 'nonesuch'" in out


def test_canaries_stay_out_of_the_referral_message_the_r_page_url_logs_and_events(
        client, ctx, roster, run_worker, runner, clock, caplog):
    from tests.test_confidentiality import CANARIES, leaks
    caplog.set_level(logging.DEBUG)
    case, path = accepted(client, ctx, run_worker, runner, **CANARIES)
    post(client, path, action="contact")
    ours = [r.record_id for r in ctx.store.resources() if not r.institution]
    post(client, path, action="refer", resource=ours)
    messages = [m for m in ctx.db.outbox_list() if m.case_id == case.case_id and "referral" in m.message_key]
    assert messages
    for m in messages:
        assert not leaks(m.subject + " " + m.body) and not leaks(m.message_key)
        link = R_LINK.search(m.body) or re.search(r"http://localhost:5000/r/\S+", m.body)
        assert not leaks(link.group(0))
        assert not leaks(client.get(link.group(0).replace("http://localhost:5000", "")).get_data(as_text=True))
    for record in caplog.records:
        assert not leaks(record.getMessage()), record.getMessage()
    for event in ctx.store.list_events(case.case_id):
        assert not leaks(event.event) and not leaks(event.actor)


def test_followup_on_postgresql(overrides, pg_url):
    from app import create_app
    from cli import read_roster_csv
    from config.settings import ROOT
    from tests.conftest import drain
    from tests.test_intake import submit
    app = create_app({**overrides, "DATABASE_URL": pg_url})
    ctx = app.extensions["peerline"]
    ctx.enqueue = lambda *a, **k: None
    ctx.store.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
    ctx.clock.pin(ctx.clock.now())
    client, runner = app.test_client(), app.test_cli_runner()
    assert submit(client).status_code == 303
    drain(ctx)
    [case] = ctx.store.list_cases()
    approve(runner, case)
    sms(runner, AVERY, f"YES {case.ref}")
    sms(runner, AVERY, f"DONE {case.ref}")
    assert runner.invoke(args=["cases", "refer", case.case_id, "--resource", "Chaplaincy"]).exit_code == 0
    ctx.clock.advance(timedelta(days=15))
    for _ in range(2):
        jobs(runner, "auto_close")
    assert ctx.store.find_case(case_id=case.case_id).status == "Closed"
    assert [e.event for e in ctx.store.list_events(case.case_id)].count(
        "Closed automatically, 14 days after contact") == 1


@pytest.fixture
def airtable_app(overrides, mocked):
    from app import create_app
    from integrations import airtable, database
    from tests.fake_airtable import FakeAirtable
    fake = FakeAirtable(token="patFollow")
    fake.add_base("appFollowup00001")
    fake.install(mocked, "https://airtable.test")
    app = create_app({**overrides, "AIRTABLE_API_KEY": "patFollow", "AIRTABLE_BASE_ID": "appFollowup00001",
                      "AIRTABLE_API_URL": "https://airtable.test"})
    ctx = app.extensions["peerline"]
    airtable.init_base(ctx.store)
    ctx.enqueue = lambda *a, **k: None
    yield app
    database.dispose_engines()


def test_what_a_coordinator_sets_in_airtable_is_carried_out_once(airtable_app):
    from cli import read_roster_csv
    from config.settings import ROOT
    from tests.conftest import drain
    from tests.test_intake import submit
    app = airtable_app
    ctx = app.extensions["peerline"]
    ctx.store.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
    ctx.clock.pin(ctx.clock.now())
    client, runner = app.test_client(), app.test_cli_runner()
    for _ in range(2):
        assert submit(client).status_code == 303
    drain(ctx)
    first, second = ctx.store.list_cases()
    for case in (first, second):
        approve(runner, case)
    sms(runner, AVERY, f"YES {first.ref}")
    sms(runner, AVERY, f"DONE {first.ref}")
    # A coordinator links two Resources in Tier 3 Referral, and sets the other case to Closed.
    chosen = [resource_id(ctx, "Chaplaincy", "NCH"), resource_id(ctx, "Clinician Counselling Service", "")]
    ctx.store.update_case(first.case_id, tier3_referral=",".join(chosen))
    ctx.store.update_case(second.case_id, status="Closed")
    for _ in range(3):
        jobs(runner, "poll_approvals")
    first = ctx.store.find_case(case_id=first.case_id)
    assert first.status == "Referred" and sorted(first.tier3_referral.split(",")) == sorted(chosen)
    assert len([m for m in sent(ctx, to=REQUESTER) if "/r/" in m.body]) == 1
    link = R_LINK.search([m for m in sent(ctx, to=REQUESTER) if "/r/" in m.body][0].body).group(0)
    html = client.get(link.replace("http://localhost:5000", "")).get_data(as_text=True)
    assert html.index("988") < html.index("Chaplaincy")
    second = ctx.store.find_case(case_id=second.case_id)
    assert abs(second.closed_at - ctx.now()) < timedelta(seconds=1)      # Airtable keeps milliseconds
    assert [o.status for o in ctx.db.offers_for_case(second.case_id)][-1] == "withdrawn"
    assert events(ctx, second).count("Closed (Status set to Closed)") == 1
    assert sum(e.startswith("Referral seen") for e in events(ctx, first)) == 1
