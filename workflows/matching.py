"""Who should support whom: rank the roster for one request, and say why.

Pure: no store, no clock, no settings. Everything the ranking depends on is passed in, so
the same inputs always give the same answer and the rules can be tested exhaustively
(tests/test_matching.py holds them with hypothesis).

Rules (docs/architecture.md section 6 field names in brackets):
- Never offered: an inactive supporter [Active]; one paused [Paused Until in the future];
  one at their [Max Open Cases]; one who took `[wellbeing] max_cases_per_month` new cases in the
  last 30 days (`recent_cases`, counted by the caller from the offers they accepted); the requester themself (the same phone number or the same email,
  case-insensitive); anyone excluded for this case (declined, or let the offer expire); and,
  when [Outside My Institution] is ticked or `program.toml` sets
  `require_outside_institution`, anyone of the requester's [Institution].
  [Department Preference] Different also rules out the requester's own department
  (same institution and same department).
- Preferred, each by a weight in `program.toml` `[matching]`: the asked-for [Role Preference]
  (Same or Different; Any is no preference), [Department Preference] Same, the same
  [Specialty], fewer open cases, and a longer rest since [Last Assigned At] (never assigned
  counts as the longest), so load spreads fairly.
- Each candidate's score is the sum of the points of its reasons, so a coordinator can
  see why one supporter is above another. Ties go to the supporter assigned longest ago,
  then by name, then by record id: the order never depends on the roster's order.
"""
from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Iterable, Mapping, NamedTuple

from config.program import Matching, Program
from workflows import phones
from workflows.model import Case, Request, Supporter

#: Why a supporter was left out (the keys of `exclusion_counts`), in the order checked.
INACTIVE = "inactive"
PAUSED = "paused"
AT_CAPACITY = "at their case limit"
MONTHLY_CAP = "at their limit of new cases for the month"
REQUESTER = "the requester"
EXCLUDED = "declined or let this case's offer expire"
SAME_INSTITUTION = "at the requester's hospital"
SAME_DEPARTMENT = "in the requester's department"
NO_INSTITUTION = "not known to be outside the requester's hospital"
LEFT_OUT_ORDER = (INACTIVE, PAUSED, AT_CAPACITY, MONTHLY_CAP, REQUESTER, EXCLUDED, SAME_INSTITUTION,
                  NO_INSTITUTION, SAME_DEPARTMENT)


class Reason(NamedTuple):
    """One thing a coordinator can read about a candidate, and the points it gave."""
    text: str
    points: float = 0.0


@dataclass(frozen=True)
class Candidate:
    supporter: Supporter
    score: float                  # the sum of the reasons' points
    reasons: tuple[Reason, ...]
    open_cases: int

    @property
    def why(self) -> str:
        """The reasons as one line: "outside requester's hospital; same role; 1 open case"."""
        return "; ".join(r.text for r in self.reasons)


def rank(request: Request | Case, supporters: Iterable[Supporter], program: Program,
         now: datetime, *, open_cases: Mapping[str, int] | None = None,
         excluded: Iterable[str] = (), limit: int | None = None,
         recent_cases: Mapping[str, int] | None = None) -> list[Candidate]:
    """The supporters who may be offered this request, best first.

    - `request`: the Request or Case being matched (its requester fields are only compared,
      never copied into the result).
    - `supporters`: the roster.
    - `program`: the program's rules (its `[matching]` section is read).
    - `now`: the time to judge Paused Until and Last Assigned At against (aware, UTC;
      a naive time is taken as UTC).
    - `open_cases`: Supporter.record_id -> number of open cases assigned to them now
      (our database keeps it: `Database.open_case_counts`); a supporter not in it has none.
    - `excluded`: record ids that may not be offered this case (they declined or let the
      offer expire).
    - `limit`: return only the best `limit` candidates (same order as the full list).
    - `recent_cases`: Supporter.record_id -> new cases they accepted in the last 30 days; at
      `[wellbeing] max_cases_per_month` (0: no cap) they are left out.
    """
    rules = program.matching
    wanted = _Wanted.of(request, rules, phones.region(program))
    now = _aware(now)
    open_cases = open_cases or {}
    excluded = frozenset(excluded)
    capped = _capped(program, recent_cases)
    # Score everyone with numbers only; the reasons are written for the ones returned.
    fits = []
    for supporter in supporters:
        count = max(int(open_cases.get(supporter.record_id, 0)), 0)
        if _exclusion(wanted, supporter, now, count, excluded, capped) is None:
            fit = _fit(wanted, supporter, now, count)
            fits.append((_points(fit, rules), supporter, fit))
    chosen = sorted(fits, key=_order) if limit is None else heapq.nsmallest(max(limit, 0), fits, key=_order)
    return [Candidate(supporter=s, score=score, reasons=_reasons(fit, rules), open_cases=fit.open_cases)
            for score, s, fit in chosen]


def exclusion_counts(request: Request | Case, supporters: Iterable[Supporter], program: Program,
                     now: datetime, *, open_cases: Mapping[str, int] | None = None,
                     excluded: Iterable[str] = (), recent_cases: Mapping[str, int] | None = None) -> Counter:
    """How many supporters each rule left out (keys: the constants at the top of the module)."""
    wanted = _Wanted.of(request, program.matching, phones.region(program))
    now, open_cases, excluded = _aware(now), open_cases or {}, frozenset(excluded)
    capped = _capped(program, recent_cases)
    return Counter(reason for s in supporters
                   if (reason := _exclusion(wanted, s, now, max(int(open_cases.get(s.record_id, 0)), 0),
                                            excluded, capped)) is not None)


def _capped(program: Program, recent_cases: Mapping[str, int] | None) -> frozenset:
    """Record ids of supporters at the monthly cap of new cases."""
    cap = program.wellbeing.max_cases_per_month
    if not cap or not recent_cases:
        return frozenset()
    return frozenset(sid for sid, n in recent_cases.items() if int(n) >= cap)


def suggestions_text(candidates: list[Candidate], *, left_out: Counter | None = None) -> str:
    """The Suggested Supporters field: one numbered line per candidate.

    "1. Avery Chen (RRMC, Nurse): outside requester's hospital; same role; 0 open cases"
    Holds supporters' names (the field is for coordinators) and nothing of the requester.
    With no candidate it says so, and why, from `left_out` (see `exclusion_counts`)."""
    if not candidates:
        return _nobody_text(left_out or Counter())
    lines = []
    for number, c in enumerate(candidates, 1):
        s = c.supporter
        about = ", ".join(_one_line(x) for x in (s.institution, s.role) if x.strip())
        lines.append(f"{number}. {_one_line(s.name)}" + (f" ({about})" if about else "") + f": {c.why}")
    return "\n".join(lines)


def suggested_supporters(request: Request | Case, supporters: list[Supporter], program: Program,
                         now: datetime, *, open_cases: Mapping[str, int] | None = None,
                         excluded: Iterable[str] = (), recent_cases: Mapping[str, int] | None = None) -> str:
    """The Suggested Supporters text for a case: the top `[matching] suggestions` candidates."""
    excluded = frozenset(excluded)
    top = rank(request, supporters, program, now, open_cases=open_cases, excluded=excluded,
               limit=program.matching.suggestions, recent_cases=recent_cases)
    left_out = None if top else exclusion_counts(request, supporters, program, now, open_cases=open_cases,
                                                 excluded=excluded, recent_cases=recent_cases)
    return suggestions_text(top, left_out=left_out)


# ---- the rules ----

@dataclass(frozen=True)
class _Wanted:
    """The request, normalised once for comparing against every supporter."""
    institution: str
    department: str
    role: str
    specialty: str
    role_preference: str          # "Same", "Different" or "" (no preference)
    department_preference: str    # "Same", "Different" or "" (no preference)
    outside_required: bool
    phone: str                    # E.164, "" when none
    email: str
    phone_region: str             # where numbers without a country code are read

    @classmethod
    def of(cls, request: Request, rules: Matching, phone_region: str) -> "_Wanted":
        role = _norm(request.role)
        # A role relation cannot be judged without the requester's role: no preference then.
        role_pref = request.role_preference if role else ""
        return cls(institution=_norm(request.institution), department=_norm(request.department),
                   role=role, specialty=_norm(request.specialty),
                   role_preference=role_pref if role_pref in ("Same", "Different") else "",
                   department_preference=request.department_preference
                   if request.department_preference in ("Same", "Different") else "",
                   outside_required=bool(request.outside_my_institution or rules.require_outside_institution),
                   phone=phones.e164(request.requester_phone, phone_region), phone_region=phone_region,
                   email=email_key(request.requester_email))


def _exclusion(wanted: _Wanted, s: Supporter, now: datetime, open_count: int,
               excluded: frozenset, capped: frozenset = frozenset()) -> str | None:
    """Why this supporter may not be offered the request, or None when they may."""
    if not s.active:
        return INACTIVE
    if s.paused_until is not None and _aware(s.paused_until) > now:
        return PAUSED
    if open_count >= s.max_open_cases:
        return AT_CAPACITY
    if s.record_id in capped:
        return MONTHLY_CAP
    if (wanted.phone and phones.e164(s.phone, wanted.phone_region) == wanted.phone) or \
            (wanted.email and email_key(s.email) == wanted.email):
        return REQUESTER
    if s.record_id in excluded:
        return EXCLUDED
    institution = _norm(s.institution)
    if wanted.outside_required:
        # Unknown on either side cannot be shown to be outside: leave them out.
        if not wanted.institution or not institution:
            return NO_INSTITUTION
        if institution == wanted.institution:
            return SAME_INSTITUTION
    if (wanted.department_preference == "Different" and wanted.institution and wanted.department
            and institution == wanted.institution and _norm(s.department) == wanted.department):
        return SAME_DEPARTMENT
    return None


class _Fit(NamedTuple):
    """How one supporter compares with the request: what the points and reasons are read from."""
    hospital: str            # "same", "outside", or "" when either is not known
    role_preference: str     # "Same", "Different", or "" for no preference
    same_role: bool
    department: str          # with Department Preference Same: "same", "elsewhere" (same
                             # department name, other hospital) or "other"; else ""
    same_specialty: bool
    open_cases: int
    rested_days: float | None   # None: never assigned


def _fit(wanted: _Wanted, s: Supporter, now: datetime, open_count: int) -> _Fit:
    institution = _norm(s.institution)
    hospital = "" if not (wanted.institution and institution) else \
        "same" if institution == wanted.institution else "outside"
    department = ""
    if wanted.department_preference == "Same" and wanted.department:
        department = "other" if _norm(s.department) != wanted.department else \
            "same" if institution == wanted.institution else "elsewhere"
    rested = None if s.last_assigned_at is None else \
        max((now - _aware(s.last_assigned_at)).total_seconds() / 86400, 0.0)
    return _Fit(hospital=hospital, role_preference=wanted.role_preference,
                same_role=_norm(s.role) == wanted.role, department=department,
                same_specialty=bool(wanted.specialty) and _norm(s.specialty) == wanted.specialty,
                open_cases=open_count, rested_days=rested)


def _role_as_asked(fit: _Fit) -> bool:
    return bool(fit.role_preference) and fit.same_role == (fit.role_preference == "Same")


def _rest_points(fit: _Fit, rules: Matching) -> float:
    """Never assigned, or rested `rest_days` or more: the full weight; less in proportion."""
    rested = rules.rest_days if fit.rested_days is None else min(fit.rested_days, rules.rest_days)
    return rules.weight_days_since_assigned * rested / rules.rest_days


def _points(fit: _Fit, rules: Matching) -> float:
    """The score; `_reasons` gives the same points, one per reason (the tests hold them equal)."""
    return ((rules.weight_role_preference if _role_as_asked(fit) else 0.0)
            + (rules.weight_department_preference if fit.department in ("same", "elsewhere") else 0.0)
            + (rules.weight_specialty if fit.same_specialty else 0.0)
            - rules.weight_open_cases * fit.open_cases
            + _rest_points(fit, rules))


def _reasons(fit: _Fit, rules: Matching) -> tuple[Reason, ...]:
    reasons: list[Reason] = []
    if fit.hospital:
        reasons.append(Reason("same hospital" if fit.hospital == "same" else "outside requester's hospital"))

    role_points = rules.weight_role_preference if _role_as_asked(fit) else 0.0
    if fit.role_preference == "Same":
        reasons.append(Reason("same role" if fit.same_role else "other role (same was asked)", role_points))
    elif fit.role_preference == "Different":
        reasons.append(Reason("different role" if not fit.same_role else "same role (different was asked)",
                              role_points))

    if fit.department:
        text = {"same": "same department", "elsewhere": "same department, other hospital",
                "other": "other department (same was asked)"}[fit.department]
        reasons.append(Reason(text, 0.0 if fit.department == "other" else rules.weight_department_preference))

    if fit.same_specialty:
        reasons.append(Reason("same specialty", rules.weight_specialty))

    n = fit.open_cases
    reasons.append(Reason(f"{n} open case{'' if n == 1 else 's'}", -rules.weight_open_cases * n))

    if fit.rested_days is None:
        text = "never assigned"
    else:
        days = int(fit.rested_days)
        text = "last assigned today" if days == 0 else f"last assigned {days} day{'' if days == 1 else 's'} ago"
    reasons.append(Reason(text, _rest_points(fit, rules)))
    return tuple(reasons)


def _order(item):
    """Best first; ties: assigned longest ago (never first), then name, then record id."""
    score, s, fit = item
    rested = (0, 0.0) if fit.rested_days is None else (1, -fit.rested_days)
    return (-score, rested, s.name.casefold(), s.name, s.record_id)


# ---- normalising ----

def email_key(email: str) -> str:
    return (email or "").strip().lower()


@lru_cache(maxsize=4096)
def _norm(value: str) -> str:
    return " ".join((value or "").split()).casefold()


def _one_line(value: str) -> str:
    return " ".join((value or "").split())


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _nobody_text(left_out: Counter) -> str:
    total = sum(left_out.values())
    if not total:
        return "No suggestion: the roster has no supporters."
    # The requester's own exclusion is not spelled out: that they are on the roster is theirs.
    shown = [f"{left_out[r]} {r}" for r in LEFT_OUT_ORDER if left_out[r] and r != REQUESTER]
    why = f" ({', '.join(shown)})" if shown else ""
    return f"No suggestion: no supporter fits this request's rules{why}. A coordinator needs to choose."
