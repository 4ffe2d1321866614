"""Matching: who may be offered a request, in what order, and what the coordinator reads.

The rules are held three ways: worked examples a coordinator would recognise, hypothesis
properties over generated rosters and requests (checked against an oracle written from the
issue's wording, not from the module), and the intake path writing Suggested Supporters.
"""
from __future__ import annotations

import math
from collections import Counter
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings, strategies as st

from config.program import Program
from workflows import matching
from workflows.model import Case, Request, Supporter

NOW = datetime(2025, 3, 4, 15, 0, tzinfo=timezone.utc)
PROGRAM = Program.model_validate({
    "program": {"name": "P"},
    "matching": {"suggestions": 3, "require_outside_institution": False,
                 "weight_role_preference": 3.0, "weight_department_preference": 1.0,
                 "weight_specialty": 1.0, "weight_open_cases": 1.0,
                 "weight_days_since_assigned": 0.5, "rest_days": 14}})


def with_matching(program: Program, **changes) -> Program:
    """`program` with some `[matching]` values changed."""
    return program.model_copy(update={"matching": program.matching.model_copy(update=changes)})


def sup(name, record_id=None, **kw):
    return Supporter(name=name, record_id=record_id or name.lower().replace(" ", "-"), **kw)


def names(candidates):
    return [c.supporter.name for c in candidates]


# ---- worked examples ----

REQ = Request(requester_name="Zebulon", requester_phone="+1 555 010 0123", requester_email="Zeb@Example.org",
              institution="NCH", department="Surgery", role="Nurse", specialty="Perioperative",
              role_preference="Same", department_preference="Any")


def test_each_never_offered_rule_leaves_out_exactly_its_supporter():
    roster = [
        sup("Ok Nurse", institution="RRMC", role="Nurse"),
        sup("Inactive", institution="RRMC", role="Nurse", active=False),
        sup("Paused", institution="RRMC", role="Nurse", paused_until=NOW + timedelta(days=1)),
        sup("Was Paused", institution="RRMC", role="Nurse", paused_until=NOW - timedelta(days=1)),
        sup("Full", institution="RRMC", role="Nurse", max_open_cases=2),
        sup("Same Phone", institution="RRMC", role="Nurse", phone="(555) 010-0123"),
        sup("Same Email", institution="RRMC", role="Nurse", email="  zeb@example.ORG"),
        sup("Declined", institution="RRMC", role="Nurse"),
        sup("Home Hospital", institution="NCH", role="Nurse"),
    ]
    got = matching.rank(REQ, roster, PROGRAM, NOW, open_cases={"full": 2}, excluded={"declined"})
    assert sorted(names(got)) == ["Home Hospital", "Ok Nurse", "Was Paused"]

    outside = matching.rank(replace(REQ, outside_my_institution=True), roster, PROGRAM, NOW,
                            open_cases={"full": 2}, excluded={"declined"})
    assert sorted(names(outside)) == ["Ok Nurse", "Was Paused"]

    required = with_matching(PROGRAM, require_outside_institution=True)
    assert names(matching.rank(REQ, roster, required, NOW, open_cases={"full": 2},
                               excluded={"declined"})) == names(outside)


def test_department_different_leaves_out_only_the_requesters_own_department():
    roster = [sup("Own Unit", institution="NCH", department="surgery "),
              sup("Other Unit", institution="NCH", department="Pharmacy"),
              sup("Surgery Elsewhere", institution="RRMC", department="Surgery")]
    got = matching.rank(replace(REQ, department_preference="Different"), roster, PROGRAM, NOW)
    assert sorted(names(got)) == ["Other Unit", "Surgery Elsewhere"]


def test_outside_asked_but_hospital_unknown_offers_nobody():
    """Without the requester's hospital nobody can be shown to be outside it."""
    roster = [sup("A", institution="RRMC"), sup("B", institution="NCH")]
    assert matching.rank(replace(REQ, institution="", outside_my_institution=True), roster, PROGRAM, NOW) == []


def test_reasons_read_as_the_coordinator_expects_and_add_up_to_the_score():
    roster = [sup("Avery Chen", institution="RRMC", role="Nurse", specialty="Critical Care"),
              sup("Jordan Patel", institution="NCH", role="Physician", specialty="perioperative",
                  last_assigned_at=NOW - timedelta(days=7))]
    first, second = matching.rank(REQ, roster, PROGRAM, NOW, open_cases={"jordan-patel": 1})
    assert first.why == "outside requester's hospital; same role; 0 open cases; never assigned"
    assert first.score == 3.0 + 0.5
    assert second.why == ("same hospital; other role (same was asked); same specialty; 1 open case; "
                          "last assigned 7 days ago")
    assert second.score == 1.0 - 1.0 + 0.25
    text = matching.suggestions_text([first, second])
    assert text.splitlines() == [
        "1. Avery Chen (RRMC, Nurse): outside requester's hospital; same role; 0 open cases; never assigned",
        "2. Jordan Patel (NCH, Physician): same hospital; other role (same was asked); same specialty; "
        "1 open case; last assigned 7 days ago"]


def test_role_different_and_department_same_are_preferences():
    roster = [sup("Nurse Same Dept", institution="NCH", department="Surgery", role="Nurse"),
              sup("Doc Other Dept", institution="RRMC", department="ICU", role="Physician"),
              sup("Doc Same Dept Elsewhere", institution="RRMC", department="Surgery", role="Physician")]
    req = replace(REQ, role_preference="Different", department_preference="Same")
    got = matching.rank(req, roster, PROGRAM, NOW)
    assert names(got) == ["Doc Same Dept Elsewhere", "Doc Other Dept", "Nurse Same Dept"]
    assert "same department, other hospital" in got[0].why and "different role" in got[0].why
    assert "same role (different was asked)" in got[2].why and "same department" in got[2].why


def test_unanswered_questions_are_not_a_match():
    """A blank specialty or role on both sides is not 'the same'."""
    req = replace(REQ, specialty="", role="", department="", department_preference="Same")
    [c] = matching.rank(req, [sup("Blank", institution="RRMC")], PROGRAM, NOW)
    assert c.why == "outside requester's hospital; 0 open cases; never assigned"
    assert c.score == 0.5


def test_ties_go_to_the_longest_rested_then_by_name():
    roster = [sup("Bea", last_assigned_at=NOW - timedelta(days=40)),
              sup("Cal", last_assigned_at=NOW - timedelta(days=20)),
              sup("Abe", last_assigned_at=NOW - timedelta(days=20)),
              sup("Dee")]
    # All four are past the 14 days of rest: equal scores, so the tie-break decides.
    assert names(matching.rank(replace(REQ, role_preference="Any"), roster, PROGRAM, NOW)) == \
        ["Dee", "Bea", "Abe", "Cal"]


def test_open_cases_are_counted_from_our_offers_until_the_case_ends(ctx):
    """What matching is told a supporter holds: the cases whose latest offer is theirs and
    open (Offered) or accepted (Assigned, Contacted, Referred), until the case is closed or
    withdrawn; read from our own database, never by listing the case store."""
    def offer(case_id, supporter, status="accepted"):
        made = ctx.db.offer_create(case_id=case_id, supporter_id=supporter, offered_at=NOW,
                                   expires_at=NOW + timedelta(hours=4))
        if status != "open":
            ctx.db.offer_close(made.id, status, NOW)

    offer("PS-1001", "rec1")                                      # Assigned
    offer("PS-1002", "rec1", "open")                              # Offered
    offer("PS-1003", "rec1")
    ctx.db.milestone_mark("PS-1003", "closed", NOW)               # Closed
    offer("PS-1004", "rec2")
    ctx.db.milestone_mark("PS-1004", "withdrawn", NOW)            # Withdrawn
    offer("PS-1005", "rec2", "declined")                          # then nobody left
    offer("PS-1006", "rec2")
    offer("PS-1006", "rec3", "open")                              # reassigned to rec3
    assert ctx.db.open_case_counts() == {"rec1": 2, "rec3": 1}


def test_nobody_left_says_why_without_naming_the_requester():
    roster = [sup("A", active=False), sup("B", institution="NCH"), sup("Me", phone="5550100123"),
              sup("C", max_open_cases=0)]
    text = matching.suggested_supporters(replace(REQ, outside_my_institution=True), roster, PROGRAM, NOW)
    assert text == ("No suggestion: no supporter fits this request's rules (1 inactive, 1 at their case limit, "
                    "1 at the requester's hospital). A coordinator needs to choose.")
    assert matching.suggested_supporters(REQ, [], PROGRAM, NOW) == "No suggestion: the roster has no supporters."


def test_a_program_without_a_matching_section_uses_the_defaults():
    roster = [sup(f"S{i}", role="Nurse" if i % 2 else "Staff") for i in range(6)]
    text = matching.suggested_supporters(REQ, roster, Program.model_validate({"program": {"name": "P"}}), NOW)
    assert [line.split(":")[0] for line in text.splitlines()] == ["1. S1 (Nurse)", "2. S3 (Nurse)", "3. S5 (Nurse)"]


# ---- properties over generated rosters ----

INSTITUTIONS = ["RRMC", "rrmc", "NCH", "SBMC", ""]
DEPARTMENTS = ["Surgery", "surgery", "ICU", "Pharmacy", ""]
ROLES = ["Nurse", "nurse ", "Physician", "Pharmacist", ""]
SPECIALTIES = ["Critical Care", "critical care", "Oncology", ""]
PHONES = ["+1 555 010 0101", "(555) 010-0101", "555.010.0102", "5550100103", ""]
EMAILS = ["a@example.org", " A@Example.ORG", "b@example.org", ""]
SUPPORTER_NAMES = ["Avery Chen", "Jordan Patel", "Quinn Alvarez", "avery chen", "Kai Romero"]
REQUESTER_NAME = "Requester Zebulon Qx"
moments = st.none() | st.integers(min_value=-60 * 24 * 40, max_value=60 * 24 * 40).map(
    lambda minutes: NOW + timedelta(minutes=minutes))

# Most generated supporters pass the first rules, so that the later ones get to decide too.
mostly_true = st.sampled_from([True, True, True, False])
mostly_false = mostly_true.map(lambda b: not b)
mostly_none = st.one_of(st.none(), st.none(), moments)


supporters = st.builds(
    Supporter, name=st.sampled_from(SUPPORTER_NAMES), phone=st.sampled_from(PHONES),
    email=st.sampled_from(EMAILS), institution=st.sampled_from(INSTITUTIONS),
    department=st.sampled_from(DEPARTMENTS), role=st.sampled_from(ROLES),
    specialty=st.sampled_from(SPECIALTIES), active=mostly_true, max_open_cases=st.integers(0, 3),
    paused_until=mostly_none, last_assigned_at=moments)


def rosters(max_size=20):
    """Rosters with unique record ids, as every store gives."""
    return st.lists(supporters, max_size=max_size).map(
        lambda people: [replace(s, record_id=f"rec{i:03d}") for i, s in enumerate(people)])


requests = st.builds(
    Request, requester_name=st.just(REQUESTER_NAME), requester_phone=st.sampled_from(PHONES),
    requester_email=st.sampled_from(EMAILS), institution=st.sampled_from(INSTITUTIONS),
    department=st.sampled_from(["Surgery", "ICU", ""]), role=st.sampled_from(ROLES),
    specialty=st.sampled_from(["Critical Care", "Oncology", ""]),
    role_preference=st.sampled_from(["Same", "Different", "Any"]),
    department_preference=st.sampled_from(["Same", "Different", "Any"]), outside_my_institution=mostly_false)
programs = mostly_false.map(lambda required: with_matching(PROGRAM, require_outside_institution=required))


@st.composite
def situations(draw, requests=requests):
    """A request, a roster, a program, the open-case counts and this case's exclusions."""
    roster = draw(rosters())
    ids = [s.record_id for s in roster]
    open_cases = draw(st.dictionaries(st.sampled_from(ids), st.integers(0, 4))) if ids else {}
    excluded = draw(st.sets(st.sampled_from(ids), max_size=3)) if ids else set()
    return draw(requests), roster, draw(programs), open_cases, excluded


def may_be_offered(req, s, program, open_cases, excluded) -> bool:
    """The issue's 'never offered' list, written out plainly as the oracle."""
    same = lambda a, b: a.strip().lower() == b.strip().lower()  # noqa: E731
    digits = lambda p: re.sub(r"[^0-9]", "", p)[-10:]  # noqa: E731
    if not s.active or (s.paused_until and s.paused_until > NOW):
        return False
    if open_cases.get(s.record_id, 0) >= s.max_open_cases:
        return False
    if (digits(req.requester_phone) and digits(req.requester_phone) == digits(s.phone)) or \
            (req.requester_email.strip() and same(req.requester_email, s.email)):
        return False
    if s.record_id in excluded:
        return False
    outside = req.outside_my_institution or program.matching.require_outside_institution
    if outside and (not req.institution.strip() or not s.institution.strip() or same(req.institution, s.institution)):
        return False
    if req.department_preference == "Different" and req.institution and req.department and \
            same(req.institution, s.institution) and same(req.department, s.department):
        return False
    return True


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(situations())
def test_offered_exactly_those_the_rules_allow(situation):
    req, roster, program, open_cases, excluded = situation
    got = matching.rank(req, roster, program, NOW, open_cases=open_cases, excluded=excluded)
    assert sorted(c.supporter.record_id for c in got) == \
        sorted(s.record_id for s in roster if may_be_offered(req, s, program, open_cases, excluded))


# The department rule needs several things to line up; this request strategy lines them up.
department_different = requests.map(lambda r: replace(
    r, department_preference="Different", outside_my_institution=False,
    institution=r.institution or "RRMC", department=r.department or "Surgery"))


@PROPERTY
@given(situations(requests=department_different))
def test_department_different_over_generated_rosters(situation):
    req, roster, program, open_cases, excluded = situation
    program = with_matching(program, require_outside_institution=False)
    got = matching.rank(req, roster, program, NOW, open_cases=open_cases, excluded=excluded)
    allowed = [s.record_id for s in roster if may_be_offered(req, s, program, open_cases, excluded)]
    assert sorted(c.supporter.record_id for c in got) == sorted(allowed)
    for c in got:
        s = c.supporter
        assert not (s.institution.lower() == req.institution.lower()
                    and s.department.strip().lower() == req.department.strip().lower())


@PROPERTY
@given(situations())
def test_sorted_best_first_and_every_score_is_its_reasons(situation):
    req, roster, program, open_cases, excluded = situation
    got = matching.rank(req, roster, program, NOW, open_cases=open_cases, excluded=excluded)
    assert all(a.score >= b.score for a, b in zip(got, got[1:]))
    for c in got:
        assert math.isclose(c.score, sum(r.points for r in c.reasons), abs_tol=1e-9)
        assert all(r.text for r in c.reasons)
        count = open_cases.get(c.supporter.record_id, 0)
        assert f"{count} open case" in c.why and c.open_cases == count


@PROPERTY
@given(situations(), st.randoms(use_true_random=False), st.integers(0, 6))
def test_same_input_same_order_whatever_the_roster_order(situation, rnd, limit):
    req, roster, program, open_cases, excluded = situation
    first = matching.rank(req, roster, program, NOW, open_cases=open_cases, excluded=excluded)
    shuffled = roster[:]
    rnd.shuffle(shuffled)
    assert matching.rank(req, shuffled, program, NOW, open_cases=open_cases, excluded=excluded) == first
    assert matching.rank(req, shuffled, program, NOW, open_cases=open_cases, excluded=excluded,
                         limit=limit) == first[:limit]
    assert matching.suggested_supporters(req, shuffled, program, NOW, open_cases=open_cases, excluded=excluded) \
        == matching.suggested_supporters(req, roster, program, NOW, open_cases=open_cases, excluded=excluded)


@PROPERTY
@given(situations())
def test_suggestions_text_holds_the_top_candidates_and_nothing_of_the_requester(situation):
    req, roster, program, open_cases, excluded = situation
    req = replace(req, department="Cardiothoracic Surgery", specialty="Perfusion")
    text = matching.suggested_supporters(req, roster, program, NOW, open_cases=open_cases, excluded=excluded)
    top = matching.rank(req, roster, program, NOW, open_cases=open_cases, excluded=excluded)[:3]
    lines = text.splitlines()
    if top:
        assert len(lines) == len(top)
        for number, (line, c) in enumerate(zip(lines, top), 1):
            assert line.startswith(f"{number}. {c.supporter.name}") and line.endswith(c.why)
    else:
        assert len(lines) == 1 and lines[0].startswith("No suggestion")
    for secret in (REQUESTER_NAME, "Cardiothoracic", "Perfusion", "@", "555"):
        assert secret not in text


# ---- preferences are monotone: two twins differ in one thing, the preferred one is above ----

def twins(base: Supporter, better: dict, worse: dict) -> tuple[Supporter, Supporter]:
    """Two otherwise identical supporters who may be offered; the better one's name sorts
    last, so only the preference can put it first."""
    common = dict(active=True, paused_until=None, max_open_cases=100, phone="+1 999 000 0000",
                  email="twin@example.org")
    return (replace(base, **common, **better, name="Zz Better", record_id="twin-b"),
            replace(base, **common, **worse, name="Aa Worse", record_id="twin-a"))


def assert_above(req, roster, better, worse, open_cases=None):
    got = matching.rank(req, [*roster, better, worse], PROGRAM, NOW, open_cases=open_cases)
    ids = [c.supporter.record_id for c in got]
    assert ids.index(better.record_id) < ids.index(worse.record_id)
    by_id = {c.supporter.record_id: c for c in got}
    assert by_id[better.record_id].score > by_id[worse.record_id].score


known = dict(institution=st.sampled_from(["RRMC", "NCH"]), role=st.sampled_from(["Nurse", "Physician"]),
             department=st.sampled_from(["Surgery", "ICU"]), specialty=st.sampled_from(["Oncology", "Critical Care"]))
base_supporters = st.builds(Supporter, name=st.just("x"), last_assigned_at=moments, **known)


def open_to_all(req):
    """A request nobody is ruled out of by institution or department."""
    return replace(req, outside_my_institution=False, department_preference="Any")


@PROPERTY
@given(requests, base_supporters, rosters(max_size=8), st.sampled_from(["Same", "Different"]))
def test_the_asked_role_relation_outranks_the_other(req, base, roster, preference):
    req = replace(open_to_all(req), role="Nurse", role_preference=preference)
    same, other = dict(role="nurse"), dict(role="Physician")
    better, worse = twins(base, *((same, other) if preference == "Same" else (other, same)))
    assert_above(req, roster, better, worse)


@PROPERTY
@given(requests, base_supporters, rosters(max_size=8))
def test_same_specialty_outranks_another(req, base, roster):
    req = replace(open_to_all(req), specialty="Oncology")
    assert_above(req, roster, *twins(base, dict(specialty="ONCOLOGY"), dict(specialty="Critical Care")))


@PROPERTY
@given(requests, base_supporters, rosters(max_size=8))
def test_same_department_outranks_another_when_asked(req, base, roster):
    req = replace(open_to_all(req), department="ICU", department_preference="Same")
    assert_above(req, roster, *twins(base, dict(department="ICU"), dict(department="Surgery")))


@PROPERTY
@given(requests, base_supporters, rosters(max_size=8), st.integers(0, 8), st.integers(1, 8))
def test_fewer_open_cases_outranks_more(req, base, roster, fewer, more):
    better, worse = twins(base, {}, {})
    assert_above(open_to_all(req), roster, better, worse,
                 open_cases={better.record_id: fewer, worse.record_id: fewer + more})


@PROPERTY
@given(requests, base_supporters, rosters(max_size=8),
       st.none() | st.integers(0, 60 * 24 * 60), st.integers(1, 60 * 24 * 60))
def test_longer_rest_is_never_below_a_shorter_one(req, base, roster, longer_minutes, gap):
    """Never assigned counts as the longest rest; past `rest_days` the scores are equal and
    the tie still goes to the longer rest."""
    longer = None if longer_minutes is None else NOW - timedelta(minutes=longer_minutes + gap)
    shorter = NOW - timedelta(minutes=longer_minutes if longer_minutes is not None else gap)
    better, worse = twins(base, dict(last_assigned_at=longer), dict(last_assigned_at=shorter))
    got = matching.rank(open_to_all(req), [*roster, better, worse], PROGRAM, NOW)
    ids = [c.supporter.record_id for c in got]
    assert ids.index(better.record_id) < ids.index(worse.record_id)


def test_property_generators_reach_every_rule():
    """The generated situations do exercise each exclusion (else the properties prove little).

    The rarest rule (the requester's own department) turns up about 4 times in 400 examples,
    and hypothesis also draws numbers from the constants of every local module loaded, so
    which examples come depends on what else the run imported: 1,000 examples keep the
    chance of missing it negligible whatever is loaded."""
    seen = Counter()

    @settings(max_examples=1000, deadline=None, database=None, derandomize=True)
    @given(situations())
    def collect(situation):
        req, roster, program, open_cases, excluded = situation
        # One supporter at the monthly cap of new cases, where there is one to choose.
        recent = {sid: program.wellbeing.max_cases_per_month for sid in list(open_cases)[:1]}
        seen.update(matching.exclusion_counts(req, roster, program, NOW, open_cases=open_cases,
                                              excluded=excluded, recent_cases=recent))
    collect()
    assert set(seen) >= set(matching.LEFT_OUT_ORDER), seen


# ---- at intake ----

def suggested_names(case):
    return [re.match(r"\d+\. (.+?) \(", line).group(1) for line in case.suggested_supporters.splitlines()]


def test_intake_writes_suggestions_that_keep_the_rules(client, ctx, roster, run_worker):
    from tests.test_intake import submit
    submit(client, outside_my_institution="y", department_preference="Different")
    run_worker()
    [case] = ctx.store.list_cases()
    assert case.outside_my_institution and case.role_preference == "Same"
    by_name = {s.name: s for s in ctx.store.supporters()}
    chosen = [by_name[n] for n in suggested_names(case)]
    assert len(chosen) == 3
    assert all(s.institution != "NCH" and s.role == "Nurse" and s.active for s in chosen)
    for line in case.suggested_supporters.splitlines():
        assert "outside requester's hospital; same role; 0 open cases; never assigned" in line
    for secret in ("Zebulon", "Surgery", "Perioperative", "0123"):
        assert secret not in case.suggested_supporters


def test_intake_never_suggests_the_requester_or_a_full_supporter(client, ctx, roster, run_worker):
    from tests.test_intake import submit
    drew = next(s for s in ctx.store.supporters() if s.name == "Drew Kim")   # NCH nurse, Emergency Nursing
    # Control: asked for his specialty by someone else, Drew is the first suggestion.
    submit(client, requester_phone="+1 555 010 0999", specialty="Emergency Nursing")
    # The same request from Drew himself (his number written another way) must not suggest him.
    submit(client, requester_phone="(555) 010-1108", specialty="Emergency Nursing")
    run_worker()
    [control] = [c for c in ctx.store.list_cases() if c.requester_phone.endswith("0999")]
    [own] = [c for c in ctx.store.list_cases() if c.requester_phone.endswith("1108")]
    assert suggested_names(control)[0] == "Drew Kim"
    assert "Drew Kim" not in own.suggested_supporters and len(suggested_names(own)) == 3

    # Drew now carries his Max Open Cases (accepted offers): a new request does not suggest him.
    for n in range(drew.max_open_cases):
        ctx.store.create_case(Case(case_id=f"PS-90{n}", source="web", source_response_id=f"web:full-{n}",
                                   submitted_at=NOW, status="Assigned", assigned_supporter=drew.record_id))
        offer = ctx.db.offer_create(case_id=f"PS-90{n}", supporter_id=drew.record_id, offered_at=NOW,
                                    expires_at=NOW + timedelta(hours=4))
        ctx.db.offer_close(offer.id, "accepted", NOW)
    submit(client, requester_phone="+1 555 010 0998", specialty="Emergency Nursing")
    run_worker()
    [third] = [c for c in ctx.store.list_cases() if c.requester_phone.endswith("0998")]
    assert "Drew Kim" not in third.suggested_supporters and len(suggested_names(third)) == 3


def test_a_supporter_at_the_monthly_cap_is_not_offered_and_the_reason_says_so():
    """[wellbeing] max_cases_per_month (4): new cases accepted in the last 30 days, counted by
    the caller from the offers table and passed in as data."""
    roster = [sup("Avery", institution="NCH", role="Nurse"), sup("Blair", institution="SBMC", role="Nurse")]
    avery = roster[0].record_id
    assert names(matching.rank(REQ, roster, PROGRAM, NOW, recent_cases={avery: 3}))[0] == "Avery"
    assert names(matching.rank(REQ, roster, PROGRAM, NOW, recent_cases={avery: 4})) == ["Blair"]
    text = matching.suggested_supporters(REQ, roster[:1], PROGRAM, NOW, recent_cases={avery: 4})
    assert "1 at their limit of new cases for the month" in text
    uncapped = PROGRAM.model_copy(update={"wellbeing": PROGRAM.wellbeing.model_copy(
        update={"max_cases_per_month": 0})})
    assert names(matching.rank(REQ, roster[:1], uncapped, NOW, recent_cases={avery: 40})) == ["Avery"]
