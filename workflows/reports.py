"""The program's numbers for leads and grant reports (docs/architecture.md section 4, `/dashboard`;
DESIGN section 7, small numbers), pure: aggregates with suppression over plain data passed in.

`report(...)` turns de-identified facts (one `CaseFacts` per case: month, institution, role,
urgency, source, for whom, flyer, status and a few durations; never a name, contact, free text
or case reference) into `Row(measure, dimension, group, value)`: one-way tables, each with an
`All` row that is the total of its dimension. `facts_for(ctx)` at the end is the one thin
function that reads them from the Context (store + database).

Small numbers: a count from 1 to threshold-1 is published as `<11` (the threshold is the
program's `small_count_threshold`; 0 is shown). Complementary suppression, per dimension (every
dimension of a measure shares its `All` total, and only one-way tables are published, so each
dimension protected against its own total protects them all): while what is published would
pin a suppressed cell (exactly one suppressed; or all of them 1; or all of them threshold-1),
the next smallest published non-zero cell is hidden too, and when none is left, the total. A
median or rate over fewer cases than the threshold is not shown (`<11`).
"""
from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from workflows.records import BY_HAND

ALL = "All"
SUPPRESSED = "suppressed"

#: Dimensions a request can be counted by, in the order they are shown.
CASE_DIMENSIONS = ("month", "institution", "role", "urgency", "source", "for", "flyer")
TIME_DIMENSIONS = ("month", "institution", "urgency")


@dataclass(frozen=True)
class CaseFacts:
    """What the report knows of one case: de-identified groups and durations (hours)."""
    month: str                      # YYYY-MM of Submitted At, program time zone
    institution: str = ""
    role: str = ""
    urgency: str = ""
    source: str = ""
    for_whom: str = ""
    flyer: str = ""                 # the flyer's institution/unit, not its tag
    status: str = ""
    hours_to_review: float | None = None      # to the first offer (the case was approved)
    reviewed_in_window: bool | None = None    # first offer before Review Due; None: not reviewed
    hours_to_accept: float | None = None
    hours_to_contact: float | None = None
    offers_declined: int = 0
    offers_expired: int = 0
    referral_kinds: tuple[str, ...] = ()
    supporter: str = ""             # an opaque key only used to count distinct supporters

    def group(self, dimension: str) -> str:
        value = {"for": self.for_whom}.get(dimension, getattr(self, dimension, ""))
        return value or "(not given)"


@dataclass(frozen=True)
class SurveyFacts:
    month: str
    institution: str
    role: str
    question: str
    answer: str


@dataclass(frozen=True)
class CheckinFacts:
    month: str
    answered: bool
    hard: bool


@dataclass(frozen=True)
class FunnelFacts:
    unit: str                       # "institution/unit"
    scans: int
    submissions: int
    cases: int


@dataclass(frozen=True)
class Row:
    measure: str
    dimension: str
    group: str
    value: int | None               # None: suppressed (or not shown)

    def shown(self, threshold: int) -> str:
        return f"<{threshold}" if self.value is None else str(self.value)


@dataclass
class Report:
    threshold: int
    start: str                      # YYYY-MM
    end: str
    rows: list[Row] = field(default_factory=list)

    def table(self, measure: str, dimension: str) -> list[Row]:
        return [r for r in self.rows if r.measure == measure and r.dimension == dimension]

    def tables(self) -> list[tuple[str, str, list[Row]]]:
        seen: dict[tuple[str, str], list[Row]] = {}
        for r in self.rows:
            seen.setdefault((r.measure, r.dimension), []).append(r)
        return [(m, d, rows) for (m, d), rows in seen.items()]

    def as_dict(self) -> dict:
        return {"from": self.start, "to": self.end, "small_count_threshold": self.threshold,
                "suppressed_as": f"<{self.threshold}",
                "rows": [{"measure": r.measure, "dimension": r.dimension, "group": r.group,
                          "value": r.shown(self.threshold) if r.value is None else r.value} for r in self.rows]}


# ---------------------------------------------------------------------------- suppression

def _pinnable(hidden: list[int], threshold: int) -> bool:
    """Would the total minus the published cells pin one of these hidden (non-zero) cells? Each
    hidden cell is known to be at least 1 (0 is published) and, read as `<11`, at most
    threshold-1: with k cells summing to S, a cell is pinned when k == 1, S == k or
    S == k * (threshold-1)."""
    k, total = len(hidden), sum(hidden)
    return k == 1 or total == k or total == k * (threshold - 1)


def suppress(counts: dict[str, int], total: int, threshold: int) -> dict[str, int | None]:
    """One dimension's cells and its `All` total, with primary and complementary suppression.
    Returns group -> value or None (hidden), `All` included."""
    out: dict[str, int | None] = {g: (None if 0 < n < threshold else n) for g, n in counts.items()}
    out[ALL] = None if 0 < total < threshold else total
    if out[ALL] is None:
        return out                  # the total itself is small: every non-zero cell is small too
    while True:
        hidden = [counts[g] for g, v in out.items() if g != ALL and v is None]
        if not hidden or not _pinnable(hidden, threshold):
            return out
        shown = sorted((n, g) for g, n in counts.items() if out[g] is not None and n > 0)
        if not shown:
            out[ALL] = None
            return out
        out[shown[0][1]] = None


def _table(measure: str, dimension: str, counts: dict[str, int], threshold: int,
           total: int | None = None) -> list[Row]:
    total = sum(counts.values()) if total is None else total
    values = suppress(counts, total, threshold)
    rows = [Row(measure, dimension, ALL, values[ALL])]
    rows += [Row(measure, dimension, g, values[g]) for g in sorted(counts)]
    return rows


def _statistic(measure: str, dimension: str, groups: dict[str, list[float]], threshold: int, how) -> list[Row]:
    """A median or rate per group (and All), shown only over at least `threshold` cases."""
    everything = [x for xs in groups.values() for x in xs]
    rows = [Row(measure, dimension, ALL, round(how(everything)) if len(everything) >= threshold else None)]
    rows += [Row(measure, dimension, g, round(how(xs)) if len(xs) >= threshold else None)
             for g, xs in sorted(groups.items())]
    return rows


def _percent(flags: list[float]) -> float:
    return 100 * sum(flags) / len(flags)


# ---------------------------------------------------------------------------- the report

def months_between(start: str, end: str) -> list[str]:
    y, m = map(int, start.split("-"))
    ey, em = map(int, end.split("-"))
    found = []
    while (y, m) <= (ey, em):
        found.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return found


def report(cases: list[CaseFacts], *, start: str, end: str, threshold: int,
           surveys: list[SurveyFacts] = (), survey_choices: dict[str, tuple[str, ...]] | None = None,
           checkins: list[CheckinFacts] = (), funnel: list[FunnelFacts] = (),
           supporters_active: dict[str, int] | None = None) -> Report:
    """Every measure over the whole months `start`..`end` (YYYY-MM, both included)."""
    months = months_between(start, end)
    inside = [c for c in cases if start <= c.month <= end]
    out = Report(threshold=threshold, start=start, end=end)
    add = out.rows.extend

    def counted(facts, dimension, weight=lambda c: 1, all_months=False):
        counts = Counter()
        if dimension == "month":
            counts.update({m: 0 for m in months})
        for c in facts:
            n = weight(c)
            if n:
                counts[c.group(dimension)] += n
            elif dimension == "month":
                counts[c.group(dimension)] += 0
        return dict(counts)

    for dim in CASE_DIMENSIONS:
        add(_table("requests", dim, counted(inside, dim), threshold))
    add(_table("cases", "status", dict(Counter(c.status or "(not given)" for c in inside)), threshold))
    crisis = [c for c in inside if c.urgency == "Crisis"]
    for dim in ("month", "institution", "role", "source", "for"):
        add(_table("crisis_requests", dim, counted(crisis, dim), threshold))

    for measure, attr in (("median_hours_to_review", "hours_to_review"),
                          ("median_hours_to_accepted_offer", "hours_to_accept"),
                          ("median_hours_to_contact", "hours_to_contact")):
        for dim in TIME_DIMENSIONS:
            groups = defaultdict(list)
            for c in inside:
                if getattr(c, attr) is not None:
                    groups[c.group(dim)].append(getattr(c, attr))
            add(_statistic(measure, dim, groups, threshold, statistics.median))
    for dim in TIME_DIMENSIONS:
        groups = defaultdict(list)
        for c in inside:
            if c.reviewed_in_window is not None:
                groups[c.group(dim)].append(1.0 if c.reviewed_in_window else 0.0)
        add(_statistic("reviews_within_window_percent", dim, groups, threshold, _percent))

    for measure, attr in (("offers_declined", "offers_declined"), ("offers_expired", "offers_expired")):
        for dim in ("month", "institution"):
            add(_table(measure, dim, counted(inside, dim, weight=lambda c, a=attr: getattr(c, a)), threshold))

    kinds = Counter(k or "(not given)" for c in inside for k in c.referral_kinds)
    add(_table("referrals", "resource_kind", dict(kinds), threshold))

    # survey answers: n per month/institution/role (one respondent answers every question: count the
    # first question's answers), and the distribution of each question's answers
    chosen = [s for s in surveys if start <= s.month <= end]
    choices = survey_choices or {}
    for question in sorted({s.question for s in chosen} | set(choices)):
        answers = [s for s in chosen if s.question == question]
        allowed = choices.get(question)
        dist = Counter({a: 0 for a in (allowed or ())})
        dist.update((s.answer if allowed is None or s.answer in allowed else "(other)") for s in answers)
        add(_table("survey_answers", f"question:{question}", dict(dist), threshold))
    if chosen:
        first = sorted({s.question for s in chosen})[0]
        answered = [s for s in chosen if s.question == first]
        for dim in ("month", "institution", "role"):
            add(_table("survey_respondents", dim,
                       dict(Counter(getattr(s, dim) or "(not given)" for s in answered)), threshold))

    if supporters_active is not None:
        add(_table("supporters_active", "institution", supporters_active, threshold))
    per_supporter = Counter(c.supporter for c in inside if c.supporter)
    spread = Counter(str(n) if n < 3 else "3 or more" for n in per_supporter.values())
    add(_table("supporters_by_cases", "cases", dict(spread), threshold))
    asked = [k for k in checkins if start <= k.month <= end]
    for measure, pick in (("checkins_answered", lambda k: k.answered), ("hard_checkins", lambda k: k.hard)):
        counts = Counter({m: 0 for m in months})
        counts.update(k.month for k in asked if pick(k))
        add(_table(measure, "month", dict(counts), threshold))

    for measure, attr in (("flyer_scans", "scans"), ("flyer_submissions", "submissions"),
                          ("flyer_cases", "cases")):
        counts = Counter()
        for f in funnel:
            counts[f.unit] += getattr(f, attr)
        add(_table(measure, "unit", dict(counts), threshold))
    return out


def to_csv_rows(rep: Report) -> list[list[str]]:
    return [["measure", "dimension", "group", "value"]] + [
        [r.measure, r.dimension, r.group, r.shown(rep.threshold)] for r in rep.rows]


# ---------------------------------------------------------------------------- months

def month_of(when: datetime | None, zone: ZoneInfo) -> str:
    return when.astimezone(zone).strftime("%Y-%m") if when else ""


def default_range(now: datetime, zone: ZoneInfo, months: int = 12) -> tuple[str, str]:
    """The last `months` whole months before the current one (program time zone)."""
    today = now.astimezone(zone).date().replace(day=1)
    y, m = today.year, today.month - 1
    if m == 0:
        y, m = y - 1, 12
    end = date(y, m, 1)
    sy, sm = end.year, end.month - (months - 1)
    while sm <= 0:
        sy, sm = sy - 1, sm + 12
    return f"{sy:04d}-{sm:02d}", end.strftime("%Y-%m")


# ---------------------------------------------------------------------------- gathering (thin)

def _hours(a: datetime | None, b: datetime | None) -> float | None:
    return (b - a).total_seconds() / 3600 if a and b and b >= a else None


def facts_for(ctx) -> dict:
    """Everything `report` takes, read from the Context (ctx: Context): store and database."""
    zone = ctx.program.program.tz
    by_case = defaultdict(list)
    for o in ctx.db.offers_all():
        by_case[o.case_id].append(o)
    kinds = {r.record_id: r.kind for r in ctx.store.resources()}
    flyer_units = {f.tag: f"{f.institution}/{f.unit}" for f in ctx.store.flyers()}
    roles, places = set(ctx.program.roles.choices), set(ctx.program.institutions)
    known = lambda value, allowed: value if not value or value in allowed else "(other)"  # noqa: E731
    facts = []
    for c in ctx.store.list_cases():
        its = sorted(by_case.get(c.case_id, []), key=lambda o: o.round)
        offered = [o for o in its if o.status != BY_HAND]     # a case given by hand was not offered
        first = offered[0].offered_at if offered else None
        accepted = next((o for o in its if o.status == "accepted"), None)
        facts.append(CaseFacts(
            month=month_of(c.submitted_at, zone), institution=known(c.institution, places), role=known(c.role, roles), urgency=c.urgency,
            source=c.source, for_whom=c.for_whom, flyer=flyer_units.get(c.flyer, "(other)" if c.flyer else ""),
            status=c.status, hours_to_review=_hours(c.submitted_at, first),
            reviewed_in_window=(first <= c.review_due) if first and c.review_due else None,
            hours_to_accept=_hours(c.submitted_at, accepted.answered_at if accepted else None),
            hours_to_contact=_hours(c.submitted_at, c.contact_made_at),
            offers_declined=sum(1 for o in its if o.status == "declined"),
            offers_expired=sum(1 for o in its if o.status == "expired"),
            referral_kinds=tuple(kinds.get(r, "") for r in (c.tier3_referral or "").split(",") if r),
            supporter=accepted.supporter_id if accepted else ""))
    from workflows import flyers as flyer_funnel
    from workflows.wellbeing import HARD
    funnel = [FunnelFacts(f"{r.institution}/{r.unit}", r.scans, r.submissions, r.cases)
              for r in flyer_funnel.funnel_by_unit(flyer_funnel.funnel_for(ctx))]
    surveys = [SurveyFacts(a["month"], a["institution"], a["role"], a["question_id"], a["answer"])
               for a in ctx.db.survey_answers_list()]
    checkins = [CheckinFacts(k["month"], k["answered_at"] is not None, k["score"] in HARD)
                for k in ctx.db.checkins_list()]
    active = Counter(s.institution or "(not given)" for s in ctx.store.supporters() if s.active)
    return {"cases": facts, "surveys": surveys, "checkins": checkins, "funnel": funnel,
            "supporters_active": dict(active),
            "survey_choices": {q.id: tuple(q.choices) for q in ctx.program.survey.questions}}


def report_for(ctx, start: str | None = None, end: str | None = None) -> Report:
    """The report over whole months (ctx: Context); by default the last twelve."""
    zone = ctx.program.program.tz
    d_start, d_end = default_range(ctx.now(), zone)
    return report(**facts_for(ctx), start=start or d_start, end=end or d_end,
                  threshold=ctx.program.program.small_count_threshold)
