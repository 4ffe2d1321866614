"""Flyers with QR codes (docs/architecture.md sections 4 and 6): their tags, where a scan goes,
scan counting, and the scan -> submission -> case funnel per tag and unit.

A flyer's QR code holds `PUBLIC_BASE_URL/f/<tag>`. A scan of a known tag is counted (tag and
day in the program's time zone, nothing else: no address, no cookie, no user agent) and sent
on to the flyer's form with the tag, so the case keeps it as its Flyer:

- Built-in: `/request?flyer=<tag>` (web/request_form.py keeps it);
- Qualtrics: `QUALTRICS_SURVEY_URL` + `flyer=<tag>` in the query string, saved as embedded
  data when the survey flow has an Embedded Data field `flyer` (config/forms/qualtrics.toml);
- REDCap: `REDCAP_SURVEY_URL` + `&flyer=<tag>`, which pre-fills the hidden field `flyer`
  (config/forms/redcap.toml).

An unknown tag is not counted (a stranger's guesses never fill the table) and goes to the
built-in form without a tag.
"""
from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from workflows.errors import describe_error
from workflows.model import FLYER_FORMS, Case, Flyer, FlyerExists

log = logging.getLogger("peerline.flyers")

#: The command's `--form` choices -> the Form field's values.
FORM_CHOICES = {"builtin": "Built-in", "qualtrics": "Qualtrics", "redcap": "REDCap"}
#: The setting holding each outside form's public link.
FORM_SETTINGS = {"Qualtrics": "QUALTRICS_SURVEY_URL", "REDCap": "REDCAP_SURVEY_URL"}
#: What a tag may look like; anything else in `/f/<...>` is not a tag of ours.
TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
#: The random end of a tag: no 0/o, 1/l/i, so a tag read aloud or typed is not misread.
_SUFFIX_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
BUILTIN_FORM = "/request"


class FlyerError(ValueError):
    """A flyer cannot be made as asked; the message names what is wrong."""


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())[:limit]


def make_tag(institution: str, unit: str, suffix: str | None = None) -> str:
    """`RRMC`, `4 North` -> `rrmc-4north-7k2`: readable, with a random end."""
    suffix = suffix or "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(3))
    parts = [p for p in (_slug(institution, 12), _slug(unit, 24), suffix) if p]
    return "-".join(parts)


def scan_link(settings: dict, tag: str) -> str:
    """What the QR code holds: the short link of the flyer."""
    return f"{str(settings['PUBLIC_BASE_URL']).rstrip('/')}/f/{tag}"


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode(query + list(params.items()))))


def form_target(settings: dict, form: str, tag: str) -> str:
    """Where a scan of `tag` goes for a flyer of `form`, the tag passed as that form expects.
    Raises FlyerError when the form's link setting is unset."""
    if form == "Built-in":
        return _with_query(BUILTIN_FORM, flyer=tag)
    key = FORM_SETTINGS.get(form)
    if key is None:
        raise FlyerError(f"unknown form {form!r}; one of {', '.join(FLYER_FORMS)}")
    if not settings.get(key):
        raise FlyerError(f"{key} is not set: a {form} flyer needs the survey's public link "
                         f"(set {key} in the environment or .env)")
    return _with_query(str(settings[key]), flyer=tag)


def make_flyer(ctx, institution: str, unit: str, form: str = "builtin", *, attempts: int = 20) -> Flyer:
    """Make a flyer's record (ctx: Context): checks the institution (program.toml) and the
    form's link setting, then finds a free tag (the store refuses a taken one)."""
    codes = {code.lower(): code for code in ctx.program.institutions}
    code = codes.get(institution.strip().lower())
    if code is None:
        raise FlyerError(f"unknown institution {institution!r}: not in program.toml [institutions] "
                         f"(known: {', '.join(ctx.program.institutions) or 'none'})")
    if not unit.strip():
        raise FlyerError("the unit is empty: say where the flyer hangs, e.g. --unit \"4 North\"")
    label = FORM_CHOICES.get(form.lower(), form)
    if label not in FLYER_FORMS:
        raise FlyerError(f"unknown form {form!r}; one of {', '.join(FORM_CHOICES)}")
    form_target(ctx.settings, label, "check")        # the form's link must be set
    for _ in range(attempts):
        tag = make_tag(code, unit)
        flyer = Flyer(tag=tag, institution=code, unit=unit.strip(), form=label,
                      link=scan_link(ctx.settings, tag), created_at=ctx.now())
        try:
            return ctx.store.create_flyer(flyer)
        except FlyerExists:
            continue
    raise FlyerError(f"no free tag for {code} {unit!r} after {attempts} tries")


def scan(ctx, tag: str) -> str:
    """A scan of `/f/<tag>` (ctx: Context): count it when the tag is a flyer's, and return where
    to send the person. Never raises: a store or database out of reach still sends them to a
    form (the built-in one, keeping the tag)."""
    tag = (tag or "").strip().lower()
    if not TAG_PATTERN.match(tag):
        return BUILTIN_FORM
    try:
        flyer = ctx.store.find_flyer(tag)
    except Exception as exc:   # the case store is out of reach: the person still gets a form
        log.warning("flyer lookup failed: %s", describe_error(exc))
        return form_target(ctx.settings, "Built-in", tag)
    if flyer is None:
        return BUILTIN_FORM
    try:
        ctx.db.count_flyer_scan(flyer.tag, ctx.now().astimezone(ctx.program.program.tz).date())
    except Exception as exc:   # a lost count must never stop a person reaching the form
        log.warning("flyer scan not counted: %s", describe_error(exc))
    try:
        return form_target(ctx.settings, flyer.form, flyer.tag)
    except FlyerError:         # its form's link was unset since: the built-in form still works
        log.warning("flyer form %s has no link; sent to the built-in form", flyer.form)
        return form_target(ctx.settings, "Built-in", flyer.tag)


@dataclass(frozen=True)
class FunnelRow:
    """One flyer's counts: scans of its QR code, submissions that carried its tag, cases."""
    tag: str
    institution: str
    unit: str
    form: str
    scans: int = 0
    submissions: int = 0
    cases: int = 0


def funnel(flyers: list[Flyer], scans: dict[str, int], web_submissions: dict[str, int],
           cases: list[Case]) -> list[FunnelRow]:
    """Per flyer (pure; counts only): scans; submissions, i.e. built-in form posts that carried
    the tag (`web_submissions`, from the inbox, case made or not) plus Qualtrics/REDCap cases
    with the tag (their answers, and so their tag, are known only once the case is made);
    and cases whose Flyer is the tag."""
    by_tag: dict[str, list[Case]] = {}
    for case in cases:
        if case.flyer:
            by_tag.setdefault(case.flyer, []).append(case)
    rows = []
    for f in flyers:
        its = by_tag.get(f.tag, [])
        outside = sum(1 for c in its if c.source != "web")
        rows.append(FunnelRow(tag=f.tag, institution=f.institution, unit=f.unit, form=f.form,
                              scans=scans.get(f.tag, 0),
                              submissions=web_submissions.get(f.tag, 0) + outside, cases=len(its)))
    return rows


def funnel_by_unit(rows: list[FunnelRow]) -> list[FunnelRow]:
    """The funnel summed per institution and unit (several flyers may hang on one unit)."""
    units: dict[tuple[str, str], FunnelRow] = {}
    for r in rows:
        key = (r.institution, r.unit)
        seen = units.get(key)
        units[key] = FunnelRow(tag="", institution=r.institution, unit=r.unit, form="",
                               scans=r.scans + (seen.scans if seen else 0),
                               submissions=r.submissions + (seen.submissions if seen else 0),
                               cases=r.cases + (seen.cases if seen else 0))
    return sorted(units.values(), key=lambda r: (r.institution, r.unit))


def funnel_for(ctx) -> list[FunnelRow]:
    """The funnel of every flyer (ctx: Context), read from the store and our database."""
    return funnel(ctx.store.flyers(), ctx.db.flyer_scan_counts(), ctx.db.flyer_submission_counts(),
                  ctx.store.list_cases())
