"""Intake: one received submission becomes exactly one case, and its reviewers are told.

`process_submission` starts from an inbox row and is safe to run any number of times: the
case is found-or-created under a per-case lock, events are written once, and messages go
through the exactly-once ledger. A failure is retried with backoff, then the row is parked
for `flask inbox replay`.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from workflows import matching, notify
from workflows.records import InboxRow
from workflows.model import (CONTACT_CHOICES, FOR_CHOICES, PREFERENCES, URGENCIES, Case, Event,
                             Request)

log = logging.getLogger("peerline.intake")

CHOICE_FIELDS = {
    "for_whom": FOR_CHOICES,
    "preferred_contact": CONTACT_CHOICES,
    "role_preference": PREFERENCES,
    "department_preference": PREFERENCES,
    "urgency": URGENCIES,
}
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
TRUE_WORDS = {"1", "true", "yes", "y", "on", "checked"}


def allowed_values(field: str, program: dict) -> tuple | None:
    """The program's values for a request field, for mapping a form's codes (None: any text)."""
    return {
        **CHOICE_FIELDS,
        "institution": tuple(program.get("institutions", {})),
        "role": tuple(program.get("roles", {}).get("choices", [])),
        "outside_my_institution": ("yes", "no"), "crisis": ("yes", "no"),
    }.get(field)


class TransientError(RuntimeError):
    """An outside system could not answer now; the submission is retried later.
    The message must hold ids only: it is shown by `flask inbox list`."""


class PermanentError(RuntimeError):
    """Retrying cannot help (a revoked token, a deleted record): park the row at once for a
    person to fix and replay. The message must hold ids only."""


def request_from_answers(answers: dict, program: dict) -> tuple[Request, list[str]]:
    """Turn answers keyed by Request field name into a Request and the problems found.

    Never raises on bad answers: what cannot be read is left empty (or at its safe default)
    and named in the problems, so a coordinator sees it and nothing is lost."""
    problems: list[str] = []
    req = Request()
    for name in ("requester_name", "requester_phone", "requester_email", "referrer_name", "referrer_phone",
                 "referrer_email", "department", "specialty", "flyer"):
        setattr(req, name, str(answers.get(name) or "").strip())
    for name in ("requester_phone", "referrer_phone"):
        raw_phone = getattr(req, name)
        if raw_phone:
            phone = notify.normalize_phone(raw_phone)
            if 11 <= len(phone) <= 16:      # + and 10 to 15 digits: E.164, what SMS providers take
                setattr(req, name, phone)
            else:
                problems.append(f"{FIELD_LABELS[name]}: not a phone number we can call or text")
    for name, choices in CHOICE_FIELDS.items():
        raw = str(answers.get(name) or "").strip()
        if not raw:
            continue
        match = next((c for c in choices if c.lower() == raw.lower()), None)
        if match is None:
            problems.append(f"{FIELD_LABELS[name]}: unreadable answer")
        else:
            setattr(req, name, match)
    req.outside_my_institution = str(answers.get("outside_my_institution") or "").strip().lower() in TRUE_WORDS
    if str(answers.get("crisis") or "").strip().lower() in TRUE_WORDS:
        req.urgency = "Crisis"

    institutions = program.get("institutions", {})
    raw_inst = str(answers.get("institution") or "").strip()
    if raw_inst:
        code = next((c for c, n in institutions.items() if raw_inst.lower() in (c.lower(), n.lower())), None)
        if code is None:
            problems.append("Institution: not one of the program's institutions")
        else:
            req.institution = code
    raw_role = str(answers.get("role") or "").strip()
    if raw_role:
        roles = program.get("roles", {}).get("choices", [])
        match = next((r for r in roles if r.lower() == raw_role.lower()), None)
        if match is None:
            problems.append("Role: not one of the program's roles")
        else:
            req.role = match

    for name in REQUIRED:
        if not getattr(req, name) and not any(p.startswith(FIELD_LABELS[name] + ":") for p in problems):
            problems.append(f"{FIELD_LABELS[name]}: missing")
    if not req.requester_phone and not req.requester_email:
        # Flagged for a coordinator; nothing promises contact to nobody (see send_crisis_resources).
        problems.append("Phone and Email: both missing, no way to reach the person")
    elif req.preferred_contact in ("Phone call", "Text message") and not req.requester_phone:
        problems.append("Phone: missing for the preferred contact")
    elif req.preferred_contact == "Email" and not req.requester_email:
        problems.append("Email: missing for the preferred contact")
    return req, problems


def review_due(program: dict, submitted_at, urgency: str):
    review = program.get("review", {})
    hours = review.get("urgent_window_hours", 12) if urgency in ("Urgent", "Crisis") \
        else review.get("window_hours", 72)
    return submitted_at + timedelta(hours=hours)


def build_case(ctx, row: InboxRow, req: Request, problems: list[str], case_id: str) -> Case:
    submitted = row.received_at
    return Case(**vars(req), case_id=case_id, source=row.source,
                source_response_id=row.source_key, submitted_at=submitted,
                status="Needs attention" if problems else "New",
                review_due=review_due(ctx.program, submitted, req.urgency),
                problems="; ".join(problems))


def reviewers_for(ctx, institution: str) -> list:
    """The institution's reviewers and every program lead, each once."""
    chosen = [r for r in ctx.store.reviewers()
              if r.program_lead or (institution and r.institution == institution)]
    return list({r.record_id: r for r in chosen}.values())


def add_event_once(ctx, case: Case, event: str, actor: str = "peerline") -> None:
    if not any(e.event == event for e in ctx.store.list_events(case.case_id)):
        ctx.store.add_events([Event(case_id=case.case_id, event=event, at=ctx.now(), actor=actor)])


def notify_reviewers(ctx, case: Case) -> int:
    link = coordinator_link(ctx)
    values = {"ref": case.ref, "deadline": notify.show_time(ctx, case.review_due), "link": link,
              "institution": ctx.program.get("institutions", {}).get(case.institution, "not given"),
              "urgency": case.urgency, "role": case.role or "not given"}
    sent = 0
    for reviewer in reviewers_for(ctx, case.institution):
        recipient = notify.Recipient(key=f"reviewer:{reviewer.record_id}",
                                     role="Program lead" if reviewer.program_lead else "Reviewer",
                                     phone=reviewer.phone, email=reviewer.email)
        for template in ("new_case_reviewer_sms", "new_case_reviewer_email"):
            if notify.send(ctx, case_id=case.case_id, kind="new_case", template=template,
                           recipient=recipient, values=values, crisis=case.urgency == "Crisis") == "sent":
                sent += 1
    return sent


def escalate_crisis(ctx, case: Case) -> None:
    """A request in crisis, at once and whatever the hour: an SMS to every on-call reviewer,
    an email to the program leads (a reference and an instruction, no detail), and the
    crisis resources (988 and the program's own) to the requester through their preferred
    channel, or the other one when that fails. An Event for each message. Safe to repeat:
    every message goes through the ledger, every Event is written once."""
    values = {"ref": case.ref, "link": coordinator_link(ctx)}
    reviewers = ctx.store.reviewers()
    for reviewer in [r for r in reviewers if r.on_call]:
        status = notify.send(ctx, case_id=case.case_id, kind="crisis", template="crisis_reviewer_sms",
                             recipient=notify.Recipient(key=f"reviewer:{reviewer.record_id}",
                                                        role="On-call reviewer", phone=reviewer.phone),
                             values=values, crisis=True)
        add_event_once(ctx, case, f"Crisis alert by SMS to on-call reviewer {reviewer.name}: {status}")
    for lead in [r for r in reviewers if r.program_lead]:
        status = notify.send(ctx, case_id=case.case_id, kind="crisis", template="crisis_lead_email",
                             recipient=notify.Recipient(key=f"reviewer:{lead.record_id}", role="Program lead",
                                                        email=lead.email),
                             values=values, crisis=True)
        add_event_once(ctx, case, f"Crisis alert by email to program lead {lead.name}: {status}")
    send_crisis_resources(ctx, case)
    log.warning("crisis escalated case=%s", case.case_id)


def send_crisis_resources(ctx, case: Case) -> str:
    """The crisis resources to the requester's own contact: no detail of the request.

    Not for a request made on a colleague's behalf: the contact on file is the colleague's,
    who has not yet agreed to be contacted (a reviewer checks that first); the person who
    referred them saw the crisis resources on the form and its confirmation page."""
    if case.for_whom == "Colleague":
        add_event_once(ctx, case, "Crisis resources not sent: request made for a colleague; on-call reviewers decide")
        return "skipped"
    requester = notify.Recipient(key="requester", role="Requester", phone=case.requester_phone,
                                 email=case.requester_email)
    preferred = ("email", "sms") if case.preferred_contact == "Email" else ("sms", "email")
    channels = [c for c in preferred if (requester.phone if c == "sms" else requester.email)]
    if not channels:
        add_event_once(ctx, case, "Crisis resources not sent: no phone or email on the request")
        return "failed"
    for channel in channels:
        status = notify.send(ctx, case_id=case.case_id, kind="crisis_resources",
                             template=f"crisis_requester_{channel}", recipient=requester,
                             values={"ref": case.ref}, crisis=True)
        add_event_once(ctx, case, f"Crisis resources to the requester by {'SMS' if channel == 'sms' else 'email'}: "
                                  f"{status}")
        if status != "failed":
            break   # the preferred channel carries it; the other is only a fallback
    return status


def coordinator_link(ctx) -> str:
    configured = ctx.program["program"].get("coordinator_url")
    if configured:
        return configured
    if ctx.settings.get("AIRTABLE_BASE_ID"):
        return f"https://airtable.com/{ctx.settings['AIRTABLE_BASE_ID']}"
    return "flask cases list"


def process_submission(ctx, inbox_id: int) -> str | None:
    """Run one inbox row to its case. Returns the Case ID, or None when not (yet) done."""
    lease = int(ctx.settings["INBOX_LEASE_SECONDS"])
    if not ctx.db.claim_submission(inbox_id, lease):
        return None   # finished, parked, or another worker has it
    row = ctx.db.inbox_row(inbox_id)
    try:
        answers, problems = answers_for(ctx, row)
        req, mapping_problems = request_from_answers(answers, ctx.program)
        problems = problems + mapping_problems
        case_id = ctx.db.case_id_for(row.source_key, ctx.program["program"].get("case_prefix", "PS"))
        with ctx.db.lock(f"case:{row.source_key}", ttl_seconds=lease, wait_seconds=min(lease, 30)):
            case = ctx.store.find_case(source_response_id=row.source_key)
            if case is None:
                new_case = build_case(ctx, row, req, problems, case_id)
                # Suggestions go in with the case: one write, and a coordinator sees them at once.
                new_case.suggested_supporters = matching.suggested_supporters(
                    new_case, ctx.store.supporters(), ctx.program, ctx.now(),
                    open_cases=matching.open_case_counts(ctx.store.list_cases()))
                case = ctx.store.create_case(new_case)
        add_event_once(ctx, case, "Case created" if not case.problems else "Case created, needs attention")
        if case.urgency == "Crisis":
            # The crisis messages only: a routine "please review by" beside "act now" would
            # tell reviewers a crisis can wait.
            escalate_crisis(ctx, case)
        else:
            notify_reviewers(ctx, case)
        add_event_once(ctx, case, "Reviewers notified")
    except Exception as exc:  # every failure is retried, then parked: nothing is dropped
        _fail(ctx, row, exc)
        return None
    ctx.db.finish_submission(inbox_id, case.case_id)
    log.info("submission done inbox=%s source=%s case=%s", inbox_id, row.source, case.case_id)
    return case.case_id


def answers_for(ctx, row: InboxRow) -> tuple[dict, list[str]]:
    """Answers keyed by Request field name. Outside forms are fetched by their integration."""
    fetch = ctx.fetchers.get(row.source)
    if fetch is None:
        return dict(row.payload.get("answers", {})), []
    return fetch(ctx, row)


def _fail(ctx, row: InboxRow, exc: Exception) -> None:
    error = describe_error(exc)
    attempts, limit = row.attempts, int(ctx.settings["RETRY_MAX_ATTEMPTS"])
    if isinstance(exc, notify.MessageInFlight):
        # Not a failure of anything outside: another worker holds a message (or died
        # holding it). Try again when its claim runs out, without growing the backoff.
        delay = int(ctx.settings["INBOX_LEASE_SECONDS"])
        ctx.db.retry_submission(row.id, error, ctx.now() + timedelta(seconds=delay))
        _schedule(ctx, row.id, delay)
        return
    if attempts >= limit or isinstance(exc, PermanentError):
        ctx.db.park_submission(row.id, error)
        log.error("submission parked inbox=%s source=%s attempts=%s error=%s",
                  row.id, row.source, attempts, error)
        return
    delay = min(int(ctx.settings["RETRY_BASE_SECONDS"]) * 2 ** (attempts - 1), 3600)
    ctx.db.retry_submission(row.id, error, ctx.now() + timedelta(seconds=delay))
    _schedule(ctx, row.id, delay)
    log.warning("submission will retry inbox=%s source=%s attempt=%s in=%ss error=%s",
                row.id, row.source, attempts, delay, error)


def _schedule(ctx, inbox_id: int, delay: int) -> None:
    try:
        ctx.enqueue(inbox_id, delay=delay)
    except Exception:  # the sweep will find the row when it is due
        log.warning("could not schedule retry inbox=%s; the sweep will", inbox_id)


def describe_error(exc: Exception) -> str:
    """An error as ids and types only: exception messages from outside clients can quote
    request data, so only the type and an HTTP status (when there is one) are kept."""
    if isinstance(exc, (TransientError, PermanentError)):
        return f"{type(exc).__name__}: {exc}"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return type(exc).__name__ + (f" (HTTP {status})" if status else "")
