"""Which reply an SMS to the program's number gets: the words people text, read forgivingly,
and what each one does (docs/architecture.md section 2).

    YES 4821, a bare YES   accept the offer (workflows.offers)
    NO 4821                decline it; it goes to the next candidate
    DONE 4821              the supporter reached the requester
    CHECKIN 4821 4         the supporter's check-in: 1 (fine) to 5 (struggling); a bare digit
                           answers the one open check-in (workflows.wellbeing)
    HELP                   what to text
    STOP (and synonyms)    opt out of SMS; START, UNSTOP (or a bare YES from an opted-out
                           number) opt back in: the carrier keywords Twilio also acts on

`integrations.twilio` only verifies and parses the webhook and answers with the reply decided
here. A number that is not in the roster gets the same generic reply whatever it asks.
"""
from __future__ import annotations

import re

from workflows import answers, notify, phones, wellbeing

#: Twilio's default keywords (Twilio's "Advanced Opt-Out" docs). Twilio answers these itself.
OPT_OUT_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
OPT_IN_WORDS = {"START", "UNSTOP"}
HELP_WORDS = {"HELP", "INFO"}
COMMAND_WORDS = {"YES": "yes", "Y": "yes", "NO": "no", "N": "no", "DONE": "done"}


def parse_command(text: str) -> tuple[str, str | None]:
    """(command, ref) from an SMS, case-insensitive, spacing and punctuation forgiven:
    "yes 4821", "YES#4821", " Yes, PS-4821! " -> ("yes", "4821"); "yes" -> ("yes", None).
    Commands: yes, no, done, checkin, help, stop, start; anything else is ("unknown", None).
    A check-in's ref is "4821 4" (reference and score), or just "4" for a bare digit; see
    `parse_checkin`."""
    tokens = re.findall(r"[A-Z]+|\d+", (text or "").upper())
    checkin = parse_checkin(text)
    if checkin is not None:
        ref, score = checkin
        return "checkin", f"{ref} {score}" if ref else str(score)
    if len(tokens) == 1 and tokens[0] in OPT_OUT_WORDS:
        return "stop", None
    if len(tokens) == 1 and tokens[0] in OPT_IN_WORDS:
        return "start", None
    if len(tokens) == 1 and tokens[0] in HELP_WORDS:
        return "help", None
    if not tokens or tokens[0] not in COMMAND_WORDS:
        return "unknown", None
    rest = [t for t in tokens[1:] if t not in ("REF", "PS", "CASE")]
    if not rest:
        return COMMAND_WORDS[tokens[0]], None
    if len(rest) == 1 and rest[0].isdigit():
        return COMMAND_WORDS[tokens[0]], rest[0]
    return "unknown", None


def parse_checkin(text: str) -> tuple[str | None, int] | None:
    """(ref, score) from "CHECKIN 4821 4", "check in ref 4821: 4", or (None, 4) from a bare "4";
    None when the text is not a check-in answer. The score is not checked here."""
    tokens = re.findall(r"[A-Z]+|\d+", (text or "").upper())
    if len(tokens) == 1 and tokens[0].isdigit() and len(tokens[0]) == 1:
        return None, int(tokens[0])
    if tokens[:2] == ["CHECK", "IN"]:
        tokens = ["CHECKIN", *tokens[2:]]
    if not tokens or tokens[0] != "CHECKIN":
        return None
    rest = [t for t in tokens[1:] if t not in ("REF", "PS", "CASE")]
    if len(rest) == 2 and all(t.isdigit() for t in rest):
        return rest[0], int(rest[1])
    if len(rest) == 1 and rest[0].isdigit() and len(rest[0]) == 1:
        return None, int(rest[0])
    return None, 0     # a check-in without a score: asked to send one


def reply(ctx, phone: str, text: str, keyword: str = "") -> tuple[str, str | None]:
    """(command, reply) for one SMS to the program's number; reply None = no answer.
    `keyword`: the provider's own reading of an opt-out word ("STOP", "START", "HELP"; Twilio's
    OptOutType), which wins over ours."""
    command, ref = parse_command(text)
    number = phones.e164(phone, phones.region(ctx.program))
    keyword = (keyword or "").upper()
    if keyword == "STOP" or command == "stop":
        ctx.db.opt_out("sms", number, source="STOP", now=ctx.now())
        return "stop", None          # Twilio confirms the opt-out itself
    if keyword == "START" or command == "start" or (
            command == "yes" and ref is None and ctx.db.is_opted_out("sms", number)):
        ctx.db.opt_in("sms", number)  # Twilio re-subscribes on START, UNSTOP and YES
        return "start", None
    if command == "yes":
        return command, answers.accept(ctx, phone, ref) if ref else answers.accept_only_offer(ctx, phone)
    if command == "no" and ref:
        return command, answers.decline(ctx, phone, ref)
    if command == "done" and ref:
        return command, answers.contact_made(ctx, phone, ref)
    if command == "checkin":
        ref, score = parse_checkin(text)
        return command, wellbeing.answer(ctx, phone, ref, score)
    if answers.person_for_phone(ctx, phone) is None:
        return command, notify.text(ctx, "sms_reply_unknown_number")
    if keyword == "HELP" or command == "help":
        return "help", notify.text(ctx, "sms_reply_help")
    if command in ("no", "done"):
        return command, notify.text(ctx, "sms_reply_needs_ref")
    return command, notify.text(ctx, "sms_reply_unknown_command")
