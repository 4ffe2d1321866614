"""Intake: one received submission becomes exactly one case, and its reviewers are told.

`process_submission` starts from an inbox row and is safe to run any number of times: the
case is found-or-created under a per-case lock, events are written once, and messages go
through the exactly-once ledger. A failure is retried with backoff, then the row is parked
for `flask inbox replay`.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from datetime import timedelta

from typing import TYPE_CHECKING

from config.vocabulary import CHOICE_FIELDS, is_true
from workflows import inbox, matching, notify, phones
from workflows.errors import CredentialsRefused, DuplicateRows, PermanentError, describe_error
from workflows.model import Case, Event, Request
from workflows.records import InboxRow

if TYPE_CHECKING:
    from config.program import Program
    from workflows.context import Context

log = logging.getLogger("peerline.intake")

FIELD_LABELS = {
    "for_whom": "For", "requester_name": "Name", "requester_phone": "Phone",
    "requester_email": "Email", "referrer_name": "Referrer Name", "referrer_phone": "Referrer Phone",
    "referrer_email": "Referrer Email", "preferred_contact": "Preferred Contact",
    "institution": "Institution", "department": "Department", "role": "Role",
    "specialty": "Specialty", "role_preference": "Role Preference",
    "department_preference": "Department Preference", "urgency": "Urgency",
    "outside_my_institution": "Outside My Institution",
}
REQUIRED = ("for_whom", "requester_name", "institution", "role", "preferred_contact")


def request_from_answers(answers: dict, program: Program) -> tuple[Request, list[str]]:
    """Turn answers keyed by Request field name into a Request and the problems found.

    Never raises on bad answers: what cannot be read is left empty (or at its safe default)
    and named in the problems, so a coordinator sees it and nothing is lost. One step per
    group of fields; the problems are listed in the order of the steps."""
    req = Request(flyer=_text(answers, "flyer"))
    problems = [*_contact(req, answers, phones.region(program)), *_who(req, answers), *_preferences(req, answers),
                *_urgency(req, answers), *_workplace(req, answers, program)]
    problems += _missing(req, problems)
    problems += _unreachable(req)
    return req, problems


def _contact(req: Request, answers: dict, region: str) -> list[str]:
    """Phones (in E.164 when they read as a number, else kept as written and named) and emails."""
    problems = []
    for name in ("requester_phone", "referrer_phone"):
        raw = _text(answers, name)
        number = phones.e164(raw, region) if raw else ""
        setattr(req, name, number or raw)
        if raw and not number:
            problems.append(f"{FIELD_LABELS[name]}: not a phone number we can call or text")
    req.requester_email, req.referrer_email = _text(answers, "requester_email"), _text(answers, "referrer_email")
    return problems


def _who(req: Request, answers: dict) -> list[str]:
    """Who the support is for, their name, and who referred them."""
    req.requester_name, req.referrer_name = _text(answers, "requester_name"), _text(answers, "referrer_name")
    return _choice(req, answers, "for_whom")


def _preferences(req: Request, answers: dict) -> list[str]:
    """How to reach out, and the kind of supporter wished for."""
    req.outside_my_institution = _yes(answers, "outside_my_institution")
    return [*_choice(req, answers, "preferred_contact"), *_choice(req, answers, "role_preference"),
            *_choice(req, answers, "department_preference")]


def _urgency(req: Request, answers: dict) -> list[str]:
    """How soon; a ticked crisis question makes it a crisis whatever the answer."""
    problems = _choice(req, answers, "urgency")
    if _yes(answers, "crisis"):
        req.urgency = "Crisis"
    return problems


def _workplace(req: Request, answers: dict, program: Program) -> list[str]:
    """Institution (by code or name, kept as its code), department, role and specialty."""
    req.department, req.specialty = _text(answers, "department"), _text(answers, "specialty")
    institutions = {code: (code, name) for code, name in program.institutions.items()}
    roles = {role: (role,) for role in program.roles.choices}
    return [*_choice(req, answers, "institution", institutions, "Institution: not one of the program's institutions"),
            *_choice(req, answers, "role", roles, "Role: not one of the program's roles")]


def _missing(req: Request, problems: list[str]) -> list[str]:
    """Required answers left empty (and not already named as unreadable)."""
    return [f"{FIELD_LABELS[name]}: missing" for name in REQUIRED
            if not getattr(req, name) and not any(p.startswith(FIELD_LABELS[name] + ":") for p in problems)]


def _unreachable(req: Request) -> list[str]:
    """No way to reach the person, or none by the way they asked for."""
    if not req.requester_phone and not req.requester_email:
        # Flagged for a coordinator; nothing promises contact to nobody (see send_crisis_resources).
        return ["Phone and Email: both missing, no way to reach the person"]
    if req.preferred_contact in ("Phone call", "Text message") and not req.requester_phone:
        return ["Phone: missing for the preferred contact"]
    if req.preferred_contact == "Email" and not req.requester_email:
        return ["Email: missing for the preferred contact"]
    return []


def _choice(req: Request, answers: dict, name: str, spellings: dict | None = None, problem: str = "") -> list[str]:
    """Set `name` to the value whose spelling the answer is (any case); `spellings` maps each
    value to how it may be written (default: the field's CHOICE_FIELDS, as themselves). An
    empty answer leaves the default; one that matches nothing is named as a problem."""
    raw = _text(answers, name).lower()
    if not raw:
        return []
    spellings = {c: (c,) for c in CHOICE_FIELDS[name]} if spellings is None else spellings
    value = next((v for v, written in spellings.items() if raw in (w.lower() for w in written)), None)
    if value is None:
        return [problem or f"{FIELD_LABELS[name]}: unreadable answer"]
    setattr(req, name, value)
    return []


def _text(answers: dict, name: str) -> str:
    return str(answers.get(name) or "").strip()


def _yes(answers: dict, name: str) -> bool:
    return is_true(answers.get(name))


def review_due(program: Program, submitted_at, urgency: str):
    review = program.review
    hours = review.urgent_window_hours if urgency in ("Urgent", "Crisis") else review.window_hours
    return submitted_at + timedelta(hours=hours)


def build_case(ctx: Context, row: InboxRow, req: Request, problems: list[str], case_id: str) -> Case:
    submitted = row.received_at
    return Case(**vars(req), case_id=case_id, source=row.source,
                source_response_id=row.source_key, submitted_at=submitted,
                status="Needs attention" if problems else "New",
                review_due=review_due(ctx.program, submitted, req.urgency),
                problems="; ".join(problems))


class CaseEvents:
    """The Events one run of intake writes for a case, each once, in one write at the end
    (Airtable takes 10 records a request). What the case already has is read at most once,
    and not at all for a case this run created (`new`): it has none yet."""

    def __init__(self, ctx: Context, case: Case, *, new: bool = False):
        self.ctx, self.case = ctx, case
        self.have: set[str] | None = set() if new else None
        self.pending: list[Event] = []

    def once(self, event: str, actor: str = "peerline") -> None:
        if self.have is None:
            self.have = {e.event for e in self.ctx.store.list_events(self.case.case_id)}
        if event not in self.have:
            self.have.add(event)
            self.pending.append(Event(case_id=self.case.case_id, event=event, at=self.ctx.now(), actor=actor))

    def write(self) -> None:
        pending, self.pending = self.pending, []
        if pending:
            self.ctx.store.add_events(pending)


def add_event_once(ctx: Context, case: Case, event: str, actor: str = "peerline",
                   events: CaseEvents | None = None) -> None:
    """`event` once for the case: into `events` when given (written with the rest), else now."""
    if events is not None:
        events.once(event, actor)
        return
    if not any(e.event == event for e in ctx.store.list_events(case.case_id)):
        ctx.store.add_events([Event(case_id=case.case_id, event=event, at=ctx.now(), actor=actor)])


def notify_reviewers(ctx: Context, case: Case) -> int:
    link = notify.coordinator_link(ctx, case.case_id)
    values = {"ref": case.ref, "deadline": notify.show_time(ctx, case.review_due), "link": link,
              "institution": ctx.program.institution_name(case.institution, "not given"),
              "urgency": case.urgency, "role": case.role or "not given"}
    messages = []
    for reviewer in notify.reviewers_for(ctx, case.institution):
        recipient = notify.Recipient(key=f"reviewer:{reviewer.record_id}",
                                     role="Program lead" if reviewer.program_lead else "Reviewer",
                                     phone=reviewer.phone, email=reviewer.email)
        messages += [notify.Outgoing(case.case_id, "new_case", template, recipient, values,
                                     crisis=case.urgency == "Crisis")
                     for template in ("new_case_reviewer_sms", "new_case_reviewer_email")]
    return notify.send_all(ctx, messages).count("sent")


def escalate_crisis(ctx: Context, case: Case, events: CaseEvents | None = None) -> None:
    """A request in crisis, at once and whatever the hour: an SMS to every on-call reviewer,
    an email to the program leads (a reference and an instruction, no detail), and the
    crisis resources (988 and the program's own) to the requester through their preferred
    channel, or the other one when that fails. An Event for each message. Safe to repeat:
    every message goes through the ledger, every Event is written once."""
    values = {"ref": case.ref, "link": notify.coordinator_link(ctx, case.case_id)}
    reviewers = ctx.store.reviewers()
    for reviewer in [r for r in reviewers if r.on_call]:
        status = notify.send(ctx, case_id=case.case_id, kind="crisis", template="crisis_reviewer_sms",
                             recipient=notify.Recipient(key=f"reviewer:{reviewer.record_id}",
                                                        role="On-call reviewer", phone=reviewer.phone),
                             values=values, crisis=True)
        add_event_once(ctx, case, f"Crisis alert by SMS to on-call reviewer {reviewer.name}: {status}",
                       events=events)
    for lead in [r for r in reviewers if r.program_lead]:
        status = notify.send(ctx, case_id=case.case_id, kind="crisis", template="crisis_lead_email",
                             recipient=notify.Recipient(key=f"reviewer:{lead.record_id}", role="Program lead",
                                                        email=lead.email),
                             values=values, crisis=True)
        add_event_once(ctx, case, f"Crisis alert by email to program lead {lead.name}: {status}",
                       events=events)
    send_crisis_resources(ctx, case, events)
    log.warning("crisis escalated case=%s", case.case_id)


def send_crisis_resources(ctx: Context, case: Case, events: CaseEvents | None = None) -> str:
    """The crisis resources to the requester's own contact: no detail of the request.

    Not for a request made on a colleague's behalf: the contact on file is the colleague's,
    who has not yet agreed to be contacted (a reviewer checks that first); the person who
    referred them saw the crisis resources on the form and its confirmation page."""
    if case.for_whom == "Colleague":
        add_event_once(ctx, case, "Crisis resources not sent: request made for a colleague; on-call reviewers decide",
                       events=events)
        return "skipped"
    requester = notify.Recipient(key="requester", role="Requester", phone=case.requester_phone,
                                 email=case.requester_email)
    preferred = ("email", "sms") if case.preferred_contact == "Email" else ("sms", "email")
    channels = [c for c in preferred if (requester.phone if c == "sms" else requester.email)]
    if not channels:
        add_event_once(ctx, case, "Crisis resources not sent: no phone or email on the request", events=events)
        return "failed"
    for channel in channels:
        status = notify.send(ctx, case_id=case.case_id, kind="crisis_resources",
                             template=f"crisis_requester_{channel}", recipient=requester,
                             values={"ref": case.ref}, crisis=True)
        add_event_once(ctx, case, f"Crisis resources to the requester by {'SMS' if channel == 'sms' else 'email'}: "
                                  f"{status}", events=events)
        if status != "failed":
            break   # the preferred channel carries it; the other is only a fallback
    return status


def in_our_database(ctx: Context) -> bool:
    """Whether the case store and every sender keep their records in our own database (the
    embedded default: the SQL store and the outbox), so that all a submission leads to can be
    one transaction. Never with an outside system: a send or an Airtable write cannot be
    undone with a rollback, and must not wait inside an open transaction."""
    return all(getattr(part, "in_database", False) for part in (ctx.store, *ctx.senders.values()))


def process_submission(ctx: Context, inbox_id: int, *, triage: bool = False) -> str | None:
    """Run one inbox row to its case. Returns the Case ID, or None when not (yet) done.

    On the embedded default the case, its events, its ledger rows and outbox messages and the
    inbox row's "done" are one unit of work: one commit, all or nothing (a worker killed midway
    leaves the row to the sweep, with nothing half written). The per-case lock is then not
    needed: the Source Response ID's unique constraint keeps it to one case. With an outside
    store or sender each step commits on its own, so the ledger holds the intent and claim
    of a message before the provider is called.

    `triage` (the worker's task): a row whose answers were unread ran ahead of routine work to
    read them; if they are routine, the rest goes back to the routine lane (see `_lane_read`)."""
    lease = int(ctx.settings["INBOX_LEASE_SECONDS"])
    row = ctx.db.claim_submission(inbox_id, lease)
    if row is None:
        return None   # finished, parked, or another worker has it
    events = None
    one_transaction = in_our_database(ctx)
    try:
        answers, problems = answers_for(ctx, row)
        req, mapping_problems = request_from_answers(answers, ctx.program)
        problems = problems + mapping_problems
        if row.priority == "unread" and not _lane_read(ctx, row, req, triage):
            return None
        with ctx.db.unit_of_work() if one_transaction else nullcontext():
            # No Case ID yet: no run ever made this case, so there is nothing to look for. (A
            # second worker on this row, once the first one's lease ran out, upserts onto the
            # same record: the key is the Source Response ID.)
            unseen = ctx.db.known_case_id(row.source_key) is None
            case_id = ctx.db.case_id_for(row.source_key, ctx.program.program.case_prefix, unseen=unseen)
            with nullcontext() if one_transaction else ctx.db.lock(
                    f"case:{row.source_key}", ttl_seconds=lease, wait_seconds=min(lease, 30)):
                case = None if unseen else ctx.store.find_case(source_response_id=row.source_key)
                created = case is None
                if created:
                    new_case = build_case(ctx, row, req, problems, case_id)
                    # Suggestions go in with the case: one write, and a coordinator sees them at once.
                    new_case.suggested_supporters = matching.suggested_supporters(
                        new_case, ctx.store.supporters(), ctx.program, ctx.now(),
                        open_cases=ctx.db.open_case_counts(),
                        recent_cases=ctx.db.accepted_counts_since(ctx.now() - timedelta(days=30)))
                    case = ctx.store.create_case(new_case, unseen=unseen)
            events = CaseEvents(ctx, case, new=created)
            with notify.mirror_batch(ctx):      # the case's messages shown in one write
                events.once("Case created" if not case.problems else "Case created, needs attention")
                if case.urgency == "Crisis":
                    # The crisis messages only: a routine "please review by" beside "act now" would
                    # tell reviewers a crisis can wait.
                    escalate_crisis(ctx, case, events)
                else:
                    notify_reviewers(ctx, case)
                events.once("Reviewers notified")
            events.write()
            ctx.db.finish_submission(inbox_id, case.case_id)
    except Exception as exc:  # every failure is retried, then parked: nothing is dropped
        if not one_transaction:     # in one unit, nothing happened: all was rolled back
            _write_what_happened(events)
        _fail(ctx, row, exc)
        return None
    log.info("submission done inbox=%s source=%s case=%s", inbox_id, row.source, case.case_id)
    return case.case_id


def _lane_read(ctx: Context, row: InboxRow, req: Request, triage: bool) -> bool:
    """A form notice's answers are read: its lane from now on is what they say. A crisis
    carries on in this run at once (it is already on a worker, ahead of the routine backlog;
    queueing it again would only add a wait and a second fetch), and its retries and sweeps
    stay in the crisis lane. Routine work read ahead of the routine backlog (`triage`) goes
    back behind it: the row is released, its attempt not counted, and queued as routine.
    Returns whether to carry on here."""
    row.priority = "crisis" if req.urgency == "Crisis" else "routine"
    if row.priority == "routine" and triage:
        ctx.db.release_submission(row.id, row.priority)
        inbox.enqueue(ctx, row.id, row.priority)
        log.info("submission read inbox=%s source=%s: routine, queued behind routine work", row.id, row.source)
        return False
    ctx.db.set_submission_priority(row.id, row.priority)
    return True


def _write_what_happened(events: CaseEvents | None) -> None:
    """After a failure: the Events of what did happen (the case made, messages sent), so a
    coordinator sees them before the retry; the retry writes them if this cannot."""
    try:
        if events is not None:
            events.write()
    except Exception as exc:
        log.warning("events not written case=%s error=%s; the retry will", events.case.case_id, describe_error(exc))


def answers_for(ctx: Context, row: InboxRow) -> tuple[dict, list[str]]:
    """Answers keyed by Request field name. Outside forms are fetched by their integration."""
    fetch = ctx.fetchers.get(row.source)
    if fetch is None:
        return dict(row.payload.get("answers", {})), []
    return fetch(ctx, row)


def _fail(ctx: Context, row: InboxRow, exc: Exception) -> None:
    error = describe_error(exc)
    attempts, limit = row.attempts, int(ctx.settings["RETRY_MAX_ATTEMPTS"])
    if isinstance(exc, notify.MessageInFlight):
        # Not a failure of anything outside: another worker holds a message (or died
        # holding it). Try again when its claim runs out, without growing the backoff.
        delay = int(ctx.settings["INBOX_LEASE_SECONDS"])
        ctx.db.retry_submission(row.id, error, ctx.now() + timedelta(seconds=delay))
        _schedule(ctx, row, delay)
        return
    if attempts >= limit or isinstance(exc, PermanentError):
        ctx.db.park_submission(row.id, error)
        if isinstance(exc, CredentialsRefused):
            notify.tell_leads_form_refused(ctx, row, exc.source)
        elif isinstance(exc, DuplicateRows):
            notify.tell_leads_duplicate_rows(ctx, row, exc)
        log.error("submission parked inbox=%s source=%s attempts=%s error=%s",
                  row.id, row.source, attempts, error)
        return
    delay = min(int(ctx.settings["RETRY_BASE_SECONDS"]) * 2 ** (attempts - 1), 3600)
    ctx.db.retry_submission(row.id, error, ctx.now() + timedelta(seconds=delay))
    _schedule(ctx, row, delay)
    log.warning("submission will retry inbox=%s source=%s attempt=%s in=%ss error=%s",
                row.id, row.source, attempts, delay, error)


def _schedule(ctx: Context, row: InboxRow, delay: int) -> None:
    """The retry, in the row's lane: a crisis stays a crisis (if the queue refuses it, the
    sweep queues it when it is due)."""
    inbox.enqueue(ctx, row.id, row.priority, delay=delay)
