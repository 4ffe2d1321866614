"""How long matching takes on a large roster.

Ranks a generated roster (default 10,000 supporters) for a few hundred generated requests
and prints the time per request, median and p99 in ms, for:
- baseline: one bare pass over the roster keeping the active supporters (the least any
  matcher must do),
- top 3: `rank(..., limit=3)`, what intake writes to Suggested Supporters,
- full list: `rank(...)` of every candidate, sorted.
and the ratio of each to the baseline. Everything is generated from a fixed seed, runs in
one process, and stops by itself (fixed counts, and a time cap per part).

    .venv/bin/python bench/matching.py [--supporters 10000] [--requests 300] [--seed 1]
"""
from __future__ import annotations

import argparse
import functools
import random
import statistics
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.program import load as load_program  # noqa: E402
from config.settings import ROOT  # noqa: E402
from bench.timing import p99, timed  # noqa: E402
from workflows import matching  # noqa: E402
from workflows.model import Request, Supporter  # noqa: E402

NOW = datetime(2025, 3, 4, 15, 0, tzinfo=timezone.utc)
INSTITUTIONS = ["RRMC", "NCH", "SBMC", "LCH"] + [f"H{i:02d}" for i in range(16)]
DEPARTMENTS = ["Emergency Medicine", "Intensive Care", "Surgery", "Oncology", "Pharmacy", "Cardiology",
               "Pediatrics", "Labor and Delivery", "Internal Medicine", "Radiology"]
ROLES = ["Nurse", "Physician", "Resident", "Advanced Practice Provider", "Pharmacist",
         "Respiratory Therapist", "Staff"]
SPECIALTIES = ["Critical Care", "Emergency Medicine", "Oncology", "Pediatrics", "Surgery", "Cardiology",
               "Neonatal", "Anesthesiology", ""]
TIME_CAP_SECONDS = 120


def roster(rnd: random.Random, size: int) -> list[Supporter]:
    people = []
    for i in range(size):
        paused = rnd.random() < 0.05
        assigned = rnd.random() < 0.7
        people.append(Supporter(
            name=f"Supporter {i:05d}", phone=f"+1555{i:07d}", email=f"s{i}@example.org",
            institution=rnd.choice(INSTITUTIONS), department=rnd.choice(DEPARTMENTS), role=rnd.choice(ROLES),
            specialty=rnd.choice(SPECIALTIES), active=rnd.random() < 0.9, max_open_cases=rnd.randint(1, 3),
            paused_until=NOW + timedelta(days=rnd.randint(1, 30)) if paused else None,
            last_assigned_at=NOW - timedelta(hours=rnd.randint(1, 24 * 90)) if assigned else None,
            record_id=f"rec{i:05d}"))
    return people


def requests(rnd: random.Random, count: int, people: list[Supporter]):
    """(request, open-case counts, excluded ids) per request."""
    open_cases = {s.record_id: rnd.randint(0, 2) for s in rnd.sample(people, len(people) // 5)}
    for _ in range(count):
        req = Request(requester_name="Bench Requester", requester_phone=f"+1666{rnd.randint(0, 9999999):07d}",
                      requester_email="requester@example.org", institution=rnd.choice(INSTITUTIONS),
                      department=rnd.choice(DEPARTMENTS), role=rnd.choice(ROLES),
                      specialty=rnd.choice(SPECIALTIES), role_preference=rnd.choice(["Same", "Different", "Any"]),
                      department_preference=rnd.choice(["Same", "Different", "Any"]),
                      outside_my_institution=rnd.random() < 0.4)
        excluded = {s.record_id for s in rnd.sample(people, rnd.randint(0, 3))}
        yield req, open_cases, excluded


def baseline(req, people, program, open_cases, excluded):
    return [s for s in people if s.active]


def top3(req, people, program, open_cases, excluded):
    return matching.rank(req, people, program, NOW, open_cases=open_cases, excluded=excluded, limit=3)


def full(req, people, program, open_cases, excluded):
    return matching.rank(req, people, program, NOW, open_cases=open_cases, excluded=excluded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--supporters", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rnd = random.Random(args.seed)
    people = roster(rnd, args.supporters)
    cases = list(requests(rnd, args.requests, people))
    program = load_program(ROOT / "config" / "program.toml")
    print(f"matching: {len(people)} supporters, {len(cases)} requests, seed {args.seed}, "
          f"Python {sys.version.split()[0]}")

    for warm in (baseline, top3, full):   # warm caches and code paths once
        warm(*cases[0][:1], people, program, *cases[0][1:])
    results = {fn.__name__: timed((functools.partial(fn, req, people, program, open_cases, excluded)
                                   for req, open_cases, excluded in cases), fn.__name__, TIME_CAP_SECONDS)
               for fn in (baseline, top3, full)}
    base_median = statistics.median(results["baseline"])
    base_p99 = p99(results["baseline"])
    print(f"{'':10} {'median ms':>10} {'p99 ms':>10} {'x baseline (median)':>20} {'x baseline (p99)':>17}")
    for name, label in (("baseline", "baseline"), ("top3", "top 3"), ("full", "full list")):
        times = results[name]
        med, tail = statistics.median(times), p99(times)
        print(f"{label:10} {med:10.2f} {tail:10.2f} {med / base_median:20.1f} {tail / base_p99:17.1f}")
    found = [len(top3(req, people, program, oc, ex)) for req, oc, ex in cases[:20]]
    print(f"candidates in the top 3 (first 20 requests): min {min(found)}, max {max(found)}")


if __name__ == "__main__":
    main()
