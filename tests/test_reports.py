"""workflows/reports.py: the pure report and its small-number suppression (DESIGN section 7)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.reports import ALL, CaseFacts, report, suppress

T = 11


def test_primary_and_complementary_suppression():
    # one small cell and a published total: the next smallest is hidden too
    assert suppress({"A": 3, "B": 20, "C": 40}, 63, T) == {"A": None, "B": None, "C": 40, ALL: 63}
    # zero is shown; nothing small, nothing hidden
    assert suppress({"A": 0, "B": 20}, 20, T) == {"A": 0, "B": 20, ALL: 20}
    # two cells of 1 would be pinned by the total (S == k): a third is hidden
    out = suppress({"A": 1, "B": 1, "C": 30, "D": 50}, 82, T)
    assert out["A"] is out["B"] is out["C"] is None and out["D"] == 50
    # two cells of 10 and nothing else to hide: the total goes
    assert suppress({"A": 10, "B": 10, "C": 0}, 20, T)[ALL] is None
    # a small total: hidden, and its cells with it
    assert suppress({"A": 4, "B": 0}, 4, T) == {"A": None, "B": 0, ALL: None}


def test_medians_and_rates_over_few_cases_are_not_shown():
    few = [CaseFacts(month="2026-01", institution="NCH", hours_to_review=5.0, reviewed_in_window=True)] * 5
    many = [CaseFacts(month="2026-01", institution="RRMC", hours_to_review=7.0, reviewed_in_window=False)] * 12
    rep = report(few + many, start="2026-01", end="2026-01", threshold=T)
    medians = {r.group: r.value for r in rep.table("median_hours_to_review", "institution")}
    assert medians == {ALL: 7, "NCH": None, "RRMC": 7}
    rates = {r.group: r.value for r in rep.table("reviews_within_window_percent", "institution")}
    assert rates == {ALL: 29, "NCH": None, "RRMC": 0}


def test_whole_months_only_and_all_is_the_total():
    cases = [CaseFacts(month=m, institution="NCH") for m in ["2025-12"] * 3 + ["2026-01"] * 20 + ["2026-02"] * 30]
    rep = report(cases, start="2026-01", end="2026-02", threshold=T)
    months = {r.group: r.value for r in rep.table("requests", "month")}
    assert months == {ALL: 50, "2026-01": 20, "2026-02": 30}


facts = st.builds(
    CaseFacts,
    month=st.sampled_from(["2026-01", "2026-02", "2026-03"]),
    institution=st.sampled_from(["NCH", "RRMC", "SJH", "VMC"]),
    role=st.sampled_from(["Nurse", "Physician", "Resident", "Staff", "Pharmacist"]),
    urgency=st.sampled_from(["Routine", "Urgent", "Crisis"]),
    source=st.sampled_from(["web", "qualtrics", "redcap"]),
    for_whom=st.sampled_from(["Self", "Colleague"]),
    flyer=st.sampled_from(["", "NCH/4N", "RRMC/ED"]),
    status=st.sampled_from(["New", "Offered", "Assigned", "Contacted", "Closed", "Withdrawn"]),
    offers_declined=st.integers(0, 3), offers_expired=st.integers(0, 2),
    referral_kinds=st.lists(st.sampled_from(["EAP", "Chaplain", "Psychiatry"]), max_size=2).map(tuple),
)


def _pins_a_cell(published: dict, hidden_true: list[int], threshold: int) -> bool:
    """Can All minus the published cells pin one hidden cell? Each hidden cell is known to be
    non-zero (0 is published) and, read as `<11`, below the threshold; with k hidden cells
    summing to S, a cell's possible values run from max(1, S-(k-1)(t-1)) to min(t-1, S-(k-1)),
    or, for a reader who does not trust the `<11` upper bound, from 1 to S-(k-1)."""
    k, total = len(hidden_true), published[ALL] - sum(v for g, v in published.items() if g != ALL and v is not None)
    assert total == sum(hidden_true)
    low, high = max(1, total - (k - 1) * (threshold - 1)), min(threshold - 1, total - (k - 1))
    return k == 1 or low == high or total - (k - 1) == 1


@settings(max_examples=150, deadline=None)
@given(st.lists(facts, max_size=120), st.sampled_from([5, 11, 20]))
def test_no_suppressed_cell_can_be_recomputed_from_one_report(cases, threshold):
    rep = report(cases, start="2026-01", end="2026-03", threshold=threshold)
    true = report(cases, start="2026-01", end="2026-03", threshold=1)      # nothing suppressed
    true_values = {(r.measure, r.dimension, r.group): r.value for r in true.rows}
    for measure, dimension, rows in rep.tables():
        if measure.startswith(("median", "reviews_within")):
            continue
        values = {r.group: r.value for r in rows}
        for r in rows:          # every published value is the true one; every small one is hidden
            truth = true_values[(measure, dimension, r.group)]
            assert r.value is None or r.value == truth
            if 0 < truth < threshold:
                assert r.value is None, (measure, dimension, r.group)
        if values[ALL] is None:
            continue
        hidden = [true_values[(measure, dimension, g)] for g, v in values.items() if g != ALL and v is None]
        if hidden:
            assert not _pins_a_cell(values, hidden, threshold), (measure, dimension, values, hidden)
