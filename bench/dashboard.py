"""How long the dashboard's report takes over many cases.

Fills a fresh SQLite DATA_DIR under /tmp with generated cases (default 10,000, over twelve
months, with offers: accepted, declined and expired) and the sample roster, then times, in
the same run:
- baseline: a bare `SELECT count(*)` on the cases table (the least any report must ask),
- report: `workflows.reports.report_for(ctx, start, end)`, what /dashboard, .json and .csv
  build on each request (gather every case and offer, then the pure measures with
  small-number suppression),
and prints the median and p99 of each in ms and the report's ratio to the baseline. Everything
is generated from a fixed seed, runs in one process, and stops by itself (fixed counts, and a
time cap per part).

    .venv/bin/python bench/dashboard.py [--cases 10000] [--repeats 15] [--seed 1]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from bench.timing import p99, timed  # noqa: E402
from config import settings as settings_module  # noqa: E402
from workflows.model import Case  # noqa: E402

START = datetime(2025, 1, 1, tzinfo=timezone.utc)
NOW = datetime(2026, 1, 10, 15, 0, tzinfo=timezone.utc)
INSTITUTIONS = ["RRMC", "NCH", "SBMC", "LCH"]
ROLES = ["Nurse", "Physician", "Resident", "Advanced Practice Provider", "Pharmacist",
         "Respiratory Therapist", "Staff"]
STATUSES = ["New", "Offered", "Accepted", "Contacted", "Closed", "Closed", "Closed"]
TIME_CAP_SECONDS = 120


def generate(rnd: random.Random, count: int, supporters: list[str]):
    """(case rows, offer rows): a year of cases, about half reviewed, with one to three offers."""
    case_rows, offer_rows = [], []
    for i in range(count):
        submitted = START + timedelta(minutes=rnd.randint(0, 365 * 24 * 60))
        case = Case(case_id=f"PS-{100000 + i}", source=rnd.choice(["web", "web", "qualtrics", "redcap"]),
                    source_response_id=f"bench:{i}", submitted_at=submitted, status=rnd.choice(STATUSES),
                    urgency="Crisis" if rnd.random() < 0.05 else rnd.choice(["Routine", "Urgent"]),
                    for_whom=rnd.choice(["Self", "Someone else"]), institution=rnd.choice(INSTITUTIONS),
                    role=rnd.choice(ROLES), department="Surgery", requester_name=f"Bench Person {i}",
                    requester_phone=f"+1666{i:07d}", review_due=submitted + timedelta(hours=72))
        if rnd.random() < 0.3:
            case.contact_made_at = submitted + timedelta(hours=rnd.randint(4, 120))
        case_rows.append(case)
        if rnd.random() < 0.5:
            at = submitted + timedelta(hours=rnd.randint(1, 96))
            rounds = rnd.randint(1, 3)
            for n in range(1, rounds + 1):
                status = "accepted" if n == rounds and rnd.random() < 0.8 else rnd.choice(["declined", "expired"])
                offer_rows.append({"case_id": case.case_id, "round": n, "supporter_id": rnd.choice(supporters),
                                   "status": status, "offered_at": at, "expires_at": at + timedelta(hours=24),
                                   "answered_at": at + timedelta(hours=rnd.randint(1, 23))})
                at += timedelta(hours=24)
    return case_rows, offer_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="peerline-bench-dashboard-", dir="/tmp") as tmp:
        os.environ.update({k: "" for k in settings_module.DEFAULTS})     # nothing from .env or the shell
        os.environ.update(DATA_DIR=tmp, SECRET_KEY="bench")
        import peerline_root
        from cli import read_roster_csv
        from integrations.database.schema import cases, offers
        from integrations.database.store import _values_of
        from workflows import reports
        from workflows.clock import Clock

        ctx = peerline_root.context(settings_module.load(), clock=Clock(NOW))
        ctx.store.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
        supporters = [s.record_id for s in ctx.store.supporters()]
        case_rows, offer_rows = generate(random.Random(args.seed), args.cases, supporters)
        with ctx.db.engine.begin() as conn:
            conn.execute(cases.insert(), [_values_of(c, cases) for c in case_rows])
            conn.execute(offers.insert(), offer_rows)
        start, end = reports.default_range(ctx.now(), ctx.program.program.tz)

        def baseline():
            with ctx.db.engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(cases)).scalar()

        def report():
            return reports.report_for(ctx, start, end)

        counted, rep = baseline(), report()          # warm caches and code paths once
        print(f"dashboard: {counted} cases, {len(offer_rows)} offers, months {start} to {end}, SQLite, "
              f"seed {args.seed}, {args.repeats} runs, Python {sys.version.split()[0]}")
        results = {fn.__name__: timed((fn for _ in range(args.repeats)), fn.__name__, TIME_CAP_SECONDS)
                   for fn in (baseline, report)}
        base_median, base_p99 = statistics.median(results["baseline"]), p99(results["baseline"])
        print(f"{'':10} {'median ms':>10} {'p99 ms':>10} {'x baseline (median)':>20} {'x baseline (p99)':>17}")
        for name in ("baseline", "report"):
            times = results[name]
            med, tail = statistics.median(times), p99(times)
            print(f"{name:10} {med:10.2f} {tail:10.2f} {med / base_median:20.1f} {tail / base_p99:17.1f}")
        total = next(r for r in rep.rows if r.measure == "requests" and r.dimension == "month" and r.group == "All")
        print(f"report rows: {len(rep.rows)}; requests in the range: {total.value}")


if __name__ == "__main__":
    main()
