"""Offers: an approved case goes to the best supporter by SMS; YES assigns it (the supporter's
private link, the requester told), NO or silence moves it on, nobody left brings it back to a
person; races end in exactly one assignment. Runs on the embedded defaults (SQLite store,
outbox), with answers sent as real signed SMS through `flask sms simulate`."""
from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest

import peerline_root
from tests.test_intake import submit
from workflows import answers, notify, offers, tasks
from workflows.model import Reviewer, Roster, Supporter

AVERY, BLAIR, KAI = "+15550101101", "+15550101117", "+15550101123"
LINK = re.compile(r"http://localhost:5000/s/\S+")


@pytest.fixture
def clock(ctx):
    """The service's one clock, stopped at today's time (tests move it on by hand)."""
    ctx.clock.pin(ctx.clock.now())
    return ctx.clock


@pytest.fixture
def worker(ctx):
    """The worker's periodic tasks, as the root registers them, run in-process on this test's context."""
    tasks.use_context(ctx)
    yield peerline_root.queue(ctx.settings)
    tasks.use_context(None)


def new_case(client, ctx, run_worker, **changes):
    before = {c.case_id for c in ctx.store.list_cases()}
    assert submit(client, **changes).status_code == 303
    run_worker()
    [case] = [c for c in ctx.store.list_cases() if c.case_id not in before]
    return case


def sms(runner, phone: str, text: str) -> str:
    result = runner.invoke(args=["sms", "simulate", phone, text])
    assert result.exit_code == 0, result.output
    return result.output.strip()


def approve(runner, case, *extra):
    result = runner.invoke(args=["cases", "approve", case.case_id, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def sent(ctx, *, to=None, channel=None, case=None):
    return [m for m in ctx.db.outbox_list() if (to is None or m.recipient == to)
            and (channel is None or m.channel == channel) and (case is None or m.case_id == case.case_id)]


def events(ctx, case):
    return [e.event for e in ctx.store.list_events(case.case_id)]


def supporter(ctx, name):
    return next(s for s in ctx.store.supporters() if s.name == name)


def test_approval_offers_the_best_candidate_by_sms_naming_only_the_reference(client, ctx, roster, run_worker,
                                                                            runner, clock):
    case = new_case(client, ctx, run_worker)
    assert sent(ctx, to=AVERY) == []                  # nobody is offered anything before approval
    output = approve(runner, case)
    assert "offered to Avery Chen" in output
    [offer] = sent(ctx, to=AVERY)
    expires = clock.now() + timedelta(hours=4)
    assert offer.body == (f"Clinician Peer Support Network: a colleague asked for peer support, ref {case.ref}. "
                             f"Reply YES {case.ref} to accept or NO {case.ref} to decline by "
                             f"{offers.notify.show_time(ctx, expires)}.")
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Offered" and case.offer_expires == expires
    assert case.assigned_supporter == supporter(ctx, "Avery Chen").record_id
    assert events(ctx, case)[-2:] == ["Approved", f"Offered to Avery Chen by SMS (offer 1), answer due "
                                                  f"{offers.notify.show_time(ctx, expires)}"]
    assert ctx.db.ledger_get(f"{case.case_id}:offer-1:supporter:{case.assigned_supporter}:sms").status == "sent"


def test_urgent_and_crisis_offers_run_out_in_thirty_minutes(client, ctx, roster, run_worker, runner, clock):
    case = new_case(client, ctx, run_worker, urgency="Urgent")
    approve(runner, case)
    assert ctx.store.find_case(case_id=case.case_id).offer_expires == clock.now() + timedelta(minutes=30)


def test_yes_assigns_the_case_sends_the_private_link_and_tells_the_requester(client, ctx, roster, run_worker,
                                                                          runner, clock):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    clock.advance(timedelta(minutes=20))
    assert sms(runner, "+1 555 010 1101", f"yes {case.ref}") == \
        f"Thank you: ref {case.ref} is yours. We are sending you a private link with how to reach them."
    avery = supporter(ctx, "Avery Chen")
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Assigned" and case.assigned_supporter == avery.record_id and case.offer_expires is None
    assert avery.last_assigned_at == clock.now()
    contact_by = offers.notify.show_time(ctx, clock.now() + timedelta(hours=48))
    link_sms = sent(ctx, to=AVERY)[-1]
    assert LINK.search(link_sms.body) and contact_by in link_sms.body and f"DONE {case.ref}" in link_sms.body
    [link_mail] = sent(ctx, to=avery.email)
    assert LINK.search(link_mail.body).group(0) == LINK.search(link_sms.body).group(0).rstrip()
    [told] = sent(ctx, to="+15550100123")    # their preferred contact is a text message
    assert told.body == (f"Clinician Peer Support Network: about your request (ref {case.ref}): a peer "
                            f"supporter will reach out to you by {contact_by}. If you need help sooner, call "
                            "or text 988.")
    for message in [link_sms, link_mail, told]:
        assert "Zebulon" not in message.body and "Surgery" not in message.body
    assert "Avery" not in told.body
    assert events(ctx, case)[-3:] == ["Accepted by Avery Chen (offer 1)",
                                      "Private link sent to Avery Chen by SMS and email",
                                      "Requester told by SMS that a supporter will reach out"]


def test_requester_who_prefers_email_is_told_by_email(client, ctx, roster, run_worker, runner, clock):
    case = new_case(client, ctx, run_worker, preferred_contact="Email", requester_email="z@example.org")
    approve(runner, case)
    sms(runner, AVERY, f"YES {case.ref}")
    [told] = sent(ctx, to="z@example.org")
    assert told.subject == f"A peer supporter will reach out (ref {case.ref})" and "988" in told.body
    assert sent(ctx, to="+15550100123") == []


def test_no_goes_to_the_next_candidate_and_never_back(client, ctx, roster, run_worker, runner, clock):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    assert sms(runner, AVERY, f"NO {case.ref}") == \
        f"Thank you for letting us know. Ref {case.ref} will go to another supporter."
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Offered" and case.assigned_supporter == supporter(ctx, "Blair Kowalski").record_id
    assert f"YES {case.ref}" in sent(ctx, to=BLAIR)[-1].body
    assert events(ctx, case)[-2:-1] == ["Declined by Avery Chen (offer 1)"]
    # A YES after the NO is late: thanked, covered, nothing changes.
    assert sms(runner, AVERY, f"YES {case.ref}") == \
        f"Thank you for answering. Ref {case.ref} is already covered, so nothing more is needed from you."
    assert ctx.store.find_case(case_id=case.case_id).assigned_supporter == supporter(ctx, "Blair Kowalski").record_id
    assert [o.status for o in ctx.db.offers_for_case(case.case_id)] == ["declined", "open"]


def test_silence_runs_out_the_offer_the_next_is_asked_and_a_late_yes_is_covered(client, ctx, roster, run_worker,
                                                                             runner, clock, worker):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    clock.advance(timedelta(hours=3, minutes=59))
    worker.expire_offers.call_local()
    assert sent(ctx, to=BLAIR) == []
    clock.advance(timedelta(minutes=2))
    worker.expire_offers.call_local()
    worker.expire_offers.call_local()                   # a doubled run changes nothing more
    assert len(sent(ctx, to=BLAIR)) == 1
    assert any(e == "Offer to Avery Chen ran out without an answer (offer 1)" for e in events(ctx, case))
    assert sms(runner, AVERY, f"YES {case.ref}").startswith("Thank you for answering.")
    assert sms(runner, BLAIR, f"Yes {case.ref}").startswith(f"Thank you: ref {case.ref} is yours")
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Assigned" and case.assigned_supporter == supporter(ctx, "Blair Kowalski").record_id
    assert sent(ctx, to=supporter(ctx, "Avery Chen").email) == []     # no link for the late one


def test_a_yes_after_the_expiry_but_before_the_task_ran_is_covered_and_moves_the_case_on(
        client, ctx, roster, run_worker, runner, clock):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    clock.advance(timedelta(hours=4, seconds=1))
    assert sms(runner, AVERY, f"YES {case.ref}").startswith("Thank you for answering.")
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Offered" and case.assigned_supporter == supporter(ctx, "Blair Kowalski").record_id


def test_two_yes_at_once_make_one_assignment(client, ctx, roster, run_worker, runner, clock):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    replies = []
    threads = [threading.Thread(target=lambda: replies.append(answers.accept(ctx, AVERY, case.ref))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(replies) == 2 and all(r.startswith(f"Thank you: ref {case.ref} is yours") for r in replies)
    assert events(ctx, case).count("Accepted by Avery Chen (offer 1)") == 1
    assert len(sent(ctx, to=supporter(ctx, "Avery Chen").email)) == 1
    assert len(sent(ctx, to="+15550100123")) == 1
    assert sms(runner, AVERY, "YES") == "You have no open offer right now. Nothing has changed."


def test_a_yes_for_someone_elses_case_changes_nothing(client, ctx, roster, run_worker, runner, clock):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    assert sms(runner, BLAIR, f"YES {case.ref}") == f"There is no open offer for ref {case.ref}. Nothing has changed."
    assert sms(runner, BLAIR, f"NO {case.ref}") == f"There is no open offer for ref {case.ref}. Nothing has changed."
    reviewer = "+15550101127"
    assert sms(runner, reviewer, f"YES {case.ref}") == f"There is no open offer for ref {case.ref}. Nothing has changed."
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Offered" and case.assigned_supporter == supporter(ctx, "Avery Chen").record_id
    assert [o.status for o in ctx.db.offers_for_case(case.case_id)] == ["open"]


def test_a_bare_yes_takes_the_one_open_offer(client, ctx, roster, run_worker, runner, clock):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    assert sms(runner, AVERY, "yes").startswith(f"Thank you: ref {case.ref} is yours")
    assert ctx.store.find_case(case_id=case.case_id).status == "Assigned"


def test_the_supporter_a_coordinator_chose_is_offered_first(client, ctx, roster, run_worker, runner, clock):
    case = new_case(client, ctx, run_worker)
    assert "offered to Kai Romero" in approve(runner, case, "--supporter", "kai  romero")
    assert f"YES {case.ref}" in sent(ctx, to=KAI)[-1].body and sent(ctx, to=AVERY) == []
    sms(runner, KAI, f"NO {case.ref}")                 # then the ranking takes over
    assert ctx.store.find_case(case_id=case.case_id).assigned_supporter == supporter(ctx, "Avery Chen").record_id
    unknown = runner.invoke(args=["cases", "approve", case.case_id, "--supporter", "Nobody Here"])
    assert unknown.exit_code != 0 and "No supporter named" in unknown.output


def test_a_colleague_request_is_offered_only_once_a_reviewer_approves_it(client, ctx, roster, run_worker, runner,
                                                                        clock, worker):
    case = new_case(client, ctx, run_worker, for_whom="Colleague")
    clock.advance(timedelta(hours=80))
    for task in (worker.poll_approvals, worker.expire_offers, worker.review_clock):
        task.call_local()
    supporters = {s.phone for s in ctx.store.supporters()} | {s.email for s in ctx.store.supporters()}
    assert not [m for m in ctx.db.outbox_list() if m.recipient in supporters]
    refused = runner.invoke(args=["cases", "approve", case.case_id])
    assert refused.exit_code != 0 and "--colleague-agreed" in refused.output
    assert ctx.store.find_case(case_id=case.case_id).status == "New"
    approve(runner, case, "--colleague-agreed")
    assert ctx.store.find_case(case_id=case.case_id).status == "Offered"


def test_an_approval_made_in_the_store_is_offered_by_the_poll_once(client, ctx, roster, run_worker, clock, worker):
    case = new_case(client, ctx, run_worker)
    ctx.store.update_case(case.case_id, status="Approved")     # as a reviewer does in Airtable
    worker.poll_approvals.call_local()
    worker.poll_approvals.call_local()
    worker.poll_approvals_now.call_local()
    assert len(sent(ctx, to=AVERY)) == 1
    assert ctx.store.find_case(case_id=case.case_id).status == "Offered"
    assert events(ctx, case).count("Approval seen (Status set to Approved)") == 1


def test_an_offer_left_half_made_by_a_crash_is_finished_once(client, ctx, roster, run_worker, clock, worker):
    case = new_case(client, ctx, run_worker)
    ctx.store.update_case(case.case_id, status="Approved")
    avery = supporter(ctx, "Avery Chen")
    # A worker died after recording the offer (and maybe sending it), before the case said so.
    ctx.db.offer_create(case_id=case.case_id, supporter_id=avery.record_id, offered_at=clock.now(),
                        expires_at=clock.now() + timedelta(hours=4))
    worker.poll_approvals.call_local()
    worker.poll_approvals.call_local()
    assert len(sent(ctx, to=AVERY)) == 1
    assert [o.round for o in ctx.db.offers_for_case(case.case_id)] == [1]
    assert ctx.store.find_case(case_id=case.case_id).status == "Offered"


@pytest.fixture
def small_roster(ctx):
    ctx.store.import_roster(Roster(
        supporters=[Supporter("Avery Chen", phone=AVERY, email="avery@example.org", institution="RRMC", role="Nurse"),
                    Supporter("Blair Kowalski", phone=BLAIR, email="blair@example.org", institution="SBMC",
                              role="Nurse"),
                    Supporter("Casey Nophone", phone="", email="casey@example.org", institution="LCH", role="Nurse")],
        reviewers=[Reviewer("Robin Asante", phone="+15550101127", email="robin@example.org", institution="NCH"),
                   Reviewer("Toni Marchetti", phone="+15550101133", email="toni@example.org", program_lead=True)]))


def test_when_nobody_is_left_the_case_needs_a_person_and_reviewers_are_told_once(client, ctx, small_roster,
                                                                               run_worker, runner, clock):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    # Casey has no phone: their offer cannot go, so they are passed over at once.
    assert "Offer to Casey Nophone could not be sent by SMS (offer 2): trying the next supporter" not in \
        events(ctx, case)
    sms(runner, AVERY, f"NO {case.ref}")
    sms(runner, BLAIR, f"NO {case.ref}")
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Needs attention" and case.assigned_supporter == "" and case.offer_expires is None
    assert case.suggested_supporters.startswith("No suggestion:") and "declined" in case.suggested_supporters
    assert "Offer to Casey Nophone could not be sent by SMS (offer 3): trying the next supporter" in events(ctx, case)
    told = [m for m in ctx.db.outbox_list() if "no supporter could take" in m.body.lower()
            or m.subject.startswith(f"Ref {case.ref} needs a supporter")]
    assert {m.recipient for m in told} == {"+15550101127", "robin@example.org", "+15550101133", "toni@example.org"}
    # Approved again without a choice: still nobody, and nobody is told twice.
    before = len(ctx.db.outbox_list())
    result = runner.invoke(args=["cases", "approve", case.case_id])
    assert "no supporter fits it" in result.output
    assert len(ctx.db.outbox_list()) == before
    # A coordinator's choice is offered, even someone who declined before.
    approve(runner, case, "--supporter", "Avery Chen")
    assert ctx.store.find_case(case_id=case.case_id).status == "Offered"
    assert f"YES {case.ref}" in sent(ctx, to=AVERY)[-1].body and len(sent(ctx, to=AVERY)) == 2


def test_closing_withdraws_the_open_offer(client, ctx, roster, run_worker, runner, clock, worker):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    result = runner.invoke(args=["cases", "close", case.ref])
    assert result.exit_code == 0 and f"{case.case_id} is Closed" in result.output
    assert sms(runner, AVERY, f"YES {case.ref}").startswith("Thank you for answering.")
    clock.advance(timedelta(hours=5))
    worker.expire_offers.call_local()
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Closed" and case.closed_at is not None
    assert sent(ctx, to=BLAIR) == []
    assert [o.status for o in ctx.db.offers_for_case(case.case_id)] == ["withdrawn"]


def test_approve_refuses_what_it_cannot_do(client, ctx, roster, run_worker, runner, clock):
    assert "No case PS-0001" in runner.invoke(args=["cases", "approve", "PS-0001"]).output
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    again = runner.invoke(args=["cases", "approve", case.case_id])
    assert again.exit_code != 0 and "is Offered" in again.output


def test_cases_list_shows_who_has_the_offer_but_nothing_of_the_requester(client, ctx, roster, run_worker, runner,
                                                                       clock):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    header, line = runner.invoke(args=["cases", "list"]).output.strip().splitlines()
    offer_expires = ctx.store.find_case(case_id=case.case_id).offer_expires
    assert re.split(r"\s{2,}", header)[-3:] == ["Supporter", "Offer expires", "Problems"]
    assert "Offered" in line and "Avery Chen" in line and notify.show_time(ctx, offer_expires) in line
    assert "Zebulon" not in line and "0123" not in line


def test_a_routine_offer_in_quiet_hours_runs_out_four_hours_after_the_morning(overrides, mocked):
    from datetime import datetime, timezone

    from app import create_app
    from tests.test_twilio import TWILIO, posts, twilio_created
    app = create_app({**overrides, **TWILIO})
    ctx = app.extensions["peerline"]
    from cli import read_roster_csv
    from config.settings import ROOT
    ctx.store.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
    night = datetime(2026, 11, 24, 4, 0, tzinfo=timezone.utc)          # 23:00 in New York
    ctx.clock.pin(night)
    from workflows.model import Case
    ctx.store.create_case(Case(case_id="PS-4821", source="web", source_response_id="web:night", status="Approved",
                               institution="NCH", role="Nurse", role_preference="Same", submitted_at=night,
                               review_due=night + timedelta(hours=72)))
    twilio_created(mocked)
    assert offers.start_approved(ctx, "PS-4821") == "offered"
    morning = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)        # 07:00 in New York
    assert ctx.store.find_case(case_id="PS-4821").offer_expires == morning + timedelta(hours=4)
    assert posts(mocked) == []                                          # held until the morning
    urgent = ctx.store.create_case(Case(case_id="PS-4822", source="web", source_response_id="web:night2",
                                        status="Approved", urgency="Urgent", institution="NCH", submitted_at=night))
    offers.start_approved(ctx, urgent.case_id)
    assert ctx.store.find_case(case_id="PS-4822").offer_expires == night + timedelta(minutes=30)
    assert len(posts(mocked)) == 1                                      # urgent goes at once
    from integrations import database
    database.dispose_engines()


# ---------------------------------------------------------------------------- the private link

def accepted(client, ctx, run_worker, runner, **changes):
    case = new_case(client, ctx, run_worker, **changes)
    approve(runner, case)
    offered = next(s for s in ctx.store.supporters()
                   if s.record_id == ctx.store.find_case(case_id=case.case_id).assigned_supporter)
    sms(runner, offered.phone, f"YES {case.ref}")
    link = LINK.search(sent(ctx, to=offered.phone)[-1].body).group(0)
    return ctx.store.find_case(case_id=case.case_id), link.replace("http://localhost:5000", "")


def test_the_link_shows_how_to_reach_the_person_and_each_opening_is_an_event(client, ctx, roster, run_worker,
                                                                          runner, clock):
    case, path = accepted(client, ctx, run_worker, runner, outside_my_institution="y")
    page = client.get(path)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store" and page.headers["Referrer-Policy"] == "no-referrer"
    assert "Zebulon" in html and "Text message" in html and 'href="sms:+15550100123"' in html
    assert "+15550100123" in html and "Routine" in html
    assert "someone in the same role as them" in html and "someone from another department" in html
    assert "someone from outside their hospital" in html and "Northgate Community Hospital" in html
    assert offers.notify.show_time(ctx, clock.now() + timedelta(hours=48)) in html and f"DONE {case.ref}" in html
    assert "988" in html and "Employee Assistance Program" in html               # crisis resources
    assert "<script" not in html and "Surgery" not in html                       # only what is needed
    client.get(path)
    assert events(ctx, case).count("Supporter link opened") == 2


@pytest.mark.parametrize("spoil", ["tamper", "expire", "close", "reassign"])
def test_a_spoiled_link_shows_the_expired_page_and_no_detail(client, ctx, roster, run_worker, runner, clock, spoil):
    case, path = accepted(client, ctx, run_worker, runner)
    if spoil == "tamper":
        payload, signature = path[3:].split(".")
        path = f"/s/{payload[:-2]}{'AB' if payload[-2:] != 'AB' else 'CD'}.{signature}"
    elif spoil == "expire":
        clock.advance(timedelta(hours=72, seconds=1))
    elif spoil == "close":
        runner.invoke(args=["cases", "close", case.case_id])
    else:
        ctx.store.update_case(case.case_id, assigned_supporter=supporter(ctx, "Kai Romero").record_id)
    page = client.get(path)
    html = page.get_data(as_text=True)
    assert page.status_code == 410 and "This link has expired." in html
    assert "Zebulon" not in html and "0123" not in html and "Text message" not in html
    assert page.headers["Cache-Control"] == "no-store"
    assert "Supporter link opened" not in events(ctx, case)
    if spoil != "tamper":
        assert "Supporter link opened after it stopped working" in events(ctx, case)


def test_a_link_never_shows_another_case(client, ctx, roster, run_worker, runner, clock):
    first, first_path = accepted(client, ctx, run_worker, runner)
    second, second_path = accepted(client, ctx, run_worker, runner, requester_name="Yolanda",
                                   requester_phone="+1 555 010 0456")
    assert "Zebulon" in client.get(first_path).get_data(as_text=True)
    assert "Yolanda" not in client.get(first_path).get_data(as_text=True)
    # A token re-signed for the other case's offer is not genuine without the key.
    from itsdangerous import URLSafeSerializer
    [other] = [o for o in ctx.db.offers_for_case(second.case_id) if o.status == "accepted"]
    forged = URLSafeSerializer("not-the-key", salt=answers.LINK_SALT).dumps([other.id, 4_000_000_000])
    page = client.get(f"/s/{forged}")
    assert page.status_code == 410 and "Yolanda" not in page.get_data(as_text=True)
    assert client.get("/s/garbage").status_code == 410
    assert events(ctx, second).count("Supporter link opened") == 0


def test_done_from_the_supporter_records_contact(client, ctx, roster, run_worker, runner, clock):
    case, path = accepted(client, ctx, run_worker, runner)
    clock.advance(timedelta(hours=3))
    assert sms(runner, AVERY, f"DONE {case.ref}") == f"Thank you: contact recorded for ref {case.ref}."
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Contacted" and case.contact_made_at == clock.now()
    assert "Contact is recorded" in client.get(path).get_data(as_text=True)


# ---------------------------------------------------------------------------- the whole loop

def test_the_whole_loop_on_the_embedded_defaults(client, ctx, roster, run_worker, runner, clock, worker):
    """Flyer form to contact made, on SQLite and the outbox, answers by signed SMS, the clock
    moved through an offer's expiry, a review reminder and its escalation, and the contact check."""
    # Two requests come in through /request; only the first is approved.
    case = new_case(client, ctx, run_worker)
    waiting = new_case(client, ctx, run_worker, requester_name="Yolanda", requester_phone="+1 555 010 0456")
    assert "offered to Avery Chen" in approve(runner, case)
    [offer] = sent(ctx, to=AVERY)
    assert f"YES {case.ref} to accept or NO {case.ref}" in offer.body and "Zebulon" not in offer.body

    # Avery stays silent: after four hours the offer runs out and Blair is asked.
    clock.advance(timedelta(hours=4, minutes=1))
    worker.expire_offers.call_local()
    assert f"YES {case.ref}" in sent(ctx, to=BLAIR)[-1].body

    # Blair accepts by SMS; Avery's late YES is thanked and told the case is covered.
    assert sms(runner, "+1 555 010 1117", f"YES {case.ref}").startswith(f"Thank you: ref {case.ref} is yours")
    accepted_at = clock.now()
    assert sms(runner, AVERY, f"YES {case.ref}").startswith("Thank you for answering.")
    blair = supporter(ctx, "Blair Kowalski")
    current = ctx.store.find_case(case_id=case.case_id)
    assert current.status == "Assigned" and current.assigned_supporter == blair.record_id
    assert blair.last_assigned_at == accepted_at
    [told] = sent(ctx, to="+15550100123")
    assert "a peer supporter will reach out to you by" in told.body and "Blair" not in told.body

    # Blair opens the private link from the SMS: how to reach Zebulon, and an Event.
    link = LINK.search(sent(ctx, to=blair.phone)[-1].body).group(0)
    page = client.get(link.replace("http://localhost:5000", ""))
    assert page.status_code == 200 and "Zebulon" in page.get_data(as_text=True)
    assert "Yolanda" not in page.get_data(as_text=True)
    assert "Supporter link opened" in events(ctx, case)

    # Nobody reviews the second request: a reminder a day before Review Due, then the leads.
    clock.pin(waiting.review_due - timedelta(hours=24))
    worker.review_clock.call_local()
    reminded = {m.recipient for m in sent(ctx, case=waiting) if "still needs review" in m.body}
    assert reminded == {"+15550101127", "+15550101128"}
    clock.pin(waiting.review_due)
    worker.review_clock.call_local()
    worker.review_clock.call_local()
    overdue = [m for m in sent(ctx, case=waiting) if "was not reviewed by" in m.body
               or m.subject.startswith("Overdue")]
    assert {m.recipient for m in overdue} == {"+15550101133", "toni.marchetti@example.org"}
    assert events(ctx, waiting)[-2:] == [
        f"Review reminder sent to the institution's reviewers (due {offers.notify.show_time(ctx, waiting.review_due)})",
        "Review overdue: program leads told"]

    # By then Blair's contact window has passed: they are asked once whether they reached out.
    assert clock.now() >= accepted_at + timedelta(hours=48)
    [check] = [m for m in sent(ctx, to=blair.phone) if "have you reached" in m.body]
    assert sms(runner, blair.phone, f"DONE {case.ref}") == f"Thank you: contact recorded for ref {case.ref}."
    assert ctx.store.find_case(case_id=case.case_id).status == "Contacted"
    clock.advance(timedelta(hours=48))
    worker.review_clock.call_local()
    assert not [m for m in ctx.db.outbox_list() if "no contact recorded" in m.body.lower()]


def test_canaries_in_a_request_stay_out_of_every_offer_message_reminder_log_and_event(
        client, ctx, roster, run_worker, runner, clock, worker, caplog):
    """The canary test of tests/test_confidentiality.py, through offers and the review clock:
    only the supporter's private page shows the requester's details."""
    import logging

    from tests.test_confidentiality import CANARIES, leaks
    caplog.set_level(logging.DEBUG)
    case = new_case(client, ctx, run_worker, **CANARIES, for_whom="Colleague", outside_my_institution="y")
    other = new_case(client, ctx, run_worker, **{**CANARIES, "requester_phone": "+1 555 013 7914"})
    approve(runner, case, "--colleague-agreed")
    offered = supporter(ctx, next(s.name for s in ctx.store.supporters()
                                  if s.record_id == ctx.store.find_case(case_id=case.case_id).assigned_supporter))
    replies = [sms(runner, offered.phone, f"NO {case.ref}")]
    current = ctx.store.find_case(case_id=case.case_id)
    second = next(s for s in ctx.store.supporters() if s.record_id == current.assigned_supporter)
    replies.append(sms(runner, second.phone, f"YES {case.ref}"))
    link = LINK.search(sent(ctx, to=second.phone)[-1].body).group(0)
    assert CANARIES["requester_name"] in client.get(link.replace("http://localhost:5000", "")).get_data(as_text=True)
    clock.pin(other.review_due + timedelta(days=5))
    worker.review_clock.call_local()
    worker.expire_offers.call_local()
    output = runner.invoke(args=["cases", "list"]).output

    messages = ctx.db.outbox_list()
    kinds = {m.message_key.split(":")[1] for m in messages}
    assert {"offer-1", "offer-2", "supporter_link", "requester_told", "review_reminder", "review_overdue",
            "contact_check", "contact_overdue"} <= kinds
    for message in messages:      # the requester's own address is where their message goes; nothing else
        assert not leaks(message.subject + " " + message.body), message.message_key
        assert not leaks(message.message_key)
    for reply in replies:
        assert not leaks(reply)
    assert not leaks(link) and not leaks(output)
    for record in caplog.records:
        assert not leaks(record.getMessage()), (record.name, record.getMessage())
    for row in ctx.db.ledger_rows():
        assert not leaks(row.values_json) and not leaks(row.error)
    for c in (case, other):
        for event in ctx.store.list_events(c.case_id):
            assert not leaks(event.event) and not leaks(event.actor)


def test_gunicorns_access_log_masks_the_link_token(client, ctx, roster, run_worker, runner, clock):
    from datetime import timedelta as td
    from types import SimpleNamespace

    from gunicorn.config import Config

    from web.supporter import AccessLogger
    case, path = accepted(client, ctx, run_worker, runner)
    token = path.rsplit("/", 1)[1]
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": path, "PATH_INFO": path, "QUERY_STRING": "",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}
    response = SimpleNamespace(status="200 OK", sent=10, headers=[])
    atoms = AccessLogger(Config()).atoms(response, [], environ, td(seconds=0.01))
    assert atoms["U"] == "/s/<token>" and atoms["r"] == "GET /s/<token> HTTP/1.1"
    assert token not in str(atoms)


def test_gunicorns_config_uses_the_masking_access_logger():
    import runpy

    from gunicorn.config import Config

    from config.settings import ROOT
    from web.supporter import AccessLogger
    config = Config()
    config.set("logger_class", runpy.run_path(str(ROOT / "config" / "gunicorn.conf.py"))["logger_class"])
    assert config.logger_class is AccessLogger


def test_a_yes_is_kept_when_its_messages_cannot_go_yet_and_they_follow(client, ctx, roster, run_worker, runner,
                                                                      clock):
    from workflows.model import MessageRecord
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    avery = supporter(ctx, "Avery Chen")
    # Another worker holds the link SMS (it died holding it): sending it now is refused.
    key = f"{case.case_id}:supporter_link:supporter:{avery.record_id}:sms"
    ctx.db.ledger_intend(MessageRecord(key=key, case_id=case.case_id, kind="supporter_link", channel="sms",
                                       recipient_role="Supporter"), AVERY, template="supporter_link_sms",
                         values={"ref": case.ref, "link": "L", "deadline": "D"}, now=clock.now())
    assert ctx.db.ledger_claim(key, claim_seconds=300, now=clock.now())
    assert sms(runner, AVERY, f"YES {case.ref}").startswith(f"Thank you: ref {case.ref} is yours")
    assert ctx.store.find_case(case_id=case.case_id).status == "Assigned"
    assert not [m for m in sent(ctx, to=AVERY) if "private link" in m.body]
    assert sent(ctx, to=avery.email) and sent(ctx, to="+15550100123")      # the others went at once
    clock.advance(timedelta(minutes=6))                      # the dead worker's claim runs out
    offers.notify.run_due(ctx)
    assert [m for m in sent(ctx, to=AVERY) if "private link" in m.body]


def test_an_offer_whose_case_write_was_missed_can_still_be_answered(client, ctx, roster, run_worker, runner,
                                                                   clock):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    sms(runner, AVERY, f"NO {case.ref}")
    assert f"YES {case.ref}" in sent(ctx, to=BLAIR)[-1].body
    # As if the store had refused our write after Blair's SMS went: the case still shows Avery.
    ctx.store.update_case(case.case_id, assigned_supporter=supporter(ctx, "Avery Chen").record_id)
    assert sms(runner, BLAIR, f"YES {case.ref}").startswith(f"Thank you: ref {case.ref} is yours")
    case = ctx.store.find_case(case_id=case.case_id)
    assert case.status == "Assigned" and case.assigned_supporter == supporter(ctx, "Blair Kowalski").record_id


def test_a_coordinator_who_puts_someone_else_on_an_offered_case_withdraws_the_offer(client, ctx, roster, run_worker,
                                                                                   runner, clock):
    case = new_case(client, ctx, run_worker)
    approve(runner, case)
    ctx.store.update_case(case.case_id, assigned_supporter=supporter(ctx, "Kai Romero").record_id)
    assert sms(runner, AVERY, f"YES {case.ref}").startswith("Thank you for answering.")
    assert [o.status for o in ctx.db.offers_for_case(case.case_id)] == ["withdrawn"]


def test_offers_and_the_clock_run_on_postgresql(overrides, pg_url):
    """The offers and milestones tables through SQLAlchemy Core on PostgreSQL, as on SQLite."""
    from app import create_app
    from cli import read_roster_csv
    from config.settings import ROOT
    from tests.conftest import drain
    from workflows import deadlines
    app = create_app({**overrides, "DATABASE_URL": pg_url})
    ctx = app.extensions["peerline"]
    ctx.enqueue = lambda *a, **k: None
    ctx.store.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
    clock = ctx.clock
    clock.pin(clock.now())
    assert submit(app.test_client()).status_code == 303
    drain(ctx)
    [case] = ctx.store.list_cases()
    runner = app.test_cli_runner()
    approve(runner, case)
    assert sms(runner, AVERY, f"NO {case.ref}").startswith("Thank you for letting us know")
    assert sms(runner, BLAIR, f"YES {case.ref}").startswith(f"Thank you: ref {case.ref} is yours")
    assert [o.status for o in ctx.db.offers_for_case(case.case_id)] == ["declined", "accepted"]
    clock.pin(case.review_due + timedelta(days=2))
    assert deadlines.run(ctx) == 2 and deadlines.run(ctx) == 0        # contact check, then reviewers; once
    assert ctx.db.milestone_done(case.case_id, "contact_overdue")
