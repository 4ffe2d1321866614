"""Airtable calls benchmark: 200 submissions through the real worker against a fake Airtable
that enforces Airtable's limit (5 requests a second per base, 429 and 30 s of refusals past it).

    .venv/bin/python bench/airtable_calls.py [--cases 200] [--base-cases 100] [--load]
                                             [--workers 4] [--max-minutes 40]

Starts tests/fake_airtable.py as an HTTP server on 127.0.0.1, creates the base's tables with
the code of `flask airtable init`, imports config/sample_roster.csv into it, puts
`--base-cases` earlier cases straight into the fake's records (one open case per supporter,
the rest closed; their offers and milestones into our database, as the worker would have
left them), records the submissions in the inbox of a temporary DATA_DIR, queues them, and
runs a real `huey_consumer peerline_root.huey` process (thread workers, as the Procfile,
periodic jobs off: their requests are per hour, not per case) with the environment pointing
at the fake. `--load` keeps one busy process per core spinning for the whole run, so that
requests are delayed between being sent and arriving, as on a busy machine.

Prints Airtable requests per case (and by kind), 429s met, the busiest second at the fake,
cases created, and the elapsed time against the floor (requests / 5 per second).
Bounded in time (--max-minutes); loopback only.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_airtable import FakeAirtable  # noqa: E402

BASE_ID = "appBench00000001"
TOKEN = "patBench.localonly"
INSTITUTIONS = ("RRMC", "NCH", "SBMC", "LCH")


def answers(n: int) -> dict:
    return {"for_whom": "Self", "requester_name": f"Bench Participant {n}", "requester_phone": "+15550100999",
            "preferred_contact": "Text message", "institution": INSTITUTIONS[n % 4], "department": "Surgery",
            "role": "Nurse", "specialty": "Perioperative", "role_preference": "Any",
            "department_preference": "Any", "urgency": "Routine"}


def preload(fake: FakeAirtable, db, n: int, prefix: str) -> int:
    """`n` earlier cases, straight into the fake's Cases (not through the API): one open
    (Assigned) per supporter, the rest Closed; and what our database keeps of them (the
    accepted offer, and the "closed" milestone of a closed one). Returns how many are open."""
    import sqlalchemy as sa
    from integrations.database.schema import case_milestones, offers
    supporters = [r["id"] for r in fake.records(BASE_ID, "Supporters")]
    at = "2026-01-05T09:00:00.000Z"
    when = datetime(2026, 1, 5, 9, tzinfo=timezone.utc)
    offer_rows, milestone_rows = [], []
    for i in range(n):
        case_id = f"{prefix}-B{i:05d}"
        open_case = i < len(supporters)
        supporter = supporters[i % len(supporters)]
        fake.add_record(BASE_ID, "Cases", {
            "Case ID": case_id, "Source": "web", "Source Response ID": f"web:earlier-{i:05d}",
            "Submitted At": at, "Status": "Assigned" if open_case else "Closed",
            "Urgency": "Routine", "Institution": INSTITUTIONS[i % 4], "Role": "Nurse",
            "Assigned Supporter": [supporter], "Contact Made At": at,
            **({} if open_case else {"Closed At": at})})
        offer_rows.append(dict(case_id=case_id, round=1, supporter_id=supporter, status="accepted",
                               offered_at=when, expires_at=when, answered_at=when))
        if not open_case:
            milestone_rows.append(dict(case_id=case_id, name="closed", at=when))
    with db.engine.begin() as conn:
        if offer_rows:
            conn.execute(sa.insert(offers), offer_rows)
        if milestone_rows:
            conn.execute(sa.insert(case_milestones), milestone_rows)
    return min(n, len(supporters))


def _spin() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--base-cases", type=int, default=100,
                        help="cases already in the base before the run (default 100)")
    parser.add_argument("--load", action="store_true", help="one busy process per core during the run")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--max-minutes", type=float, default=40)
    args = parser.parse_args()

    fake = FakeAirtable(token=TOKEN, rate_limit=5, penalty_seconds=30)
    fake.add_base(BASE_ID)
    with tempfile.TemporaryDirectory(prefix="peerline-bench-") as tmp, fake.serve() as url:
        from config import settings as settings_module
        env = {k: v for k, v in os.environ.items() if k not in settings_module.DEFAULTS}
        env.update({k: "" for k in settings_module.DEFAULTS})     # nothing from .env or the shell
        env.update(DATA_DIR=tmp, SECRET_KEY="bench", AIRTABLE_API_KEY=TOKEN, AIRTABLE_BASE_ID=BASE_ID,
                   AIRTABLE_API_URL=url, PYTHONPATH=str(ROOT))
        os.environ.update(env)

        from cli import read_roster_csv
        import peerline_root
        from integrations import airtable
        values = settings_module.load()
        ctx = peerline_root.context(values)
        created, refused = airtable.init_base(ctx.store, ctx.program.program.timezone)
        assert created and not refused, (created, refused)
        counts = ctx.store.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
        setup_requests = len(fake.requests)
        print(f"fake Airtable at {url}: tables created, roster imported ({counts}) "
              f"in {setup_requests} requests")
        opened = preload(fake, ctx.db, args.base_cases, ctx.program.program.case_prefix)
        print(f"{args.base_cases} cases already in the base ({opened} open, the rest closed), "
              f"put in without the API")

        for n in range(args.cases):
            inbox_id, _ = ctx.db.record_submission(source="web", source_key=f"web:bench-{n:04d}",
                                                   payload={"answers": answers(n)})
            ctx.enqueue(inbox_id)
        print(f"{args.cases} submissions in the inbox and queued; starting huey_consumer "
              f"({args.workers} thread workers)")

        spinners = [multiprocessing.Process(target=_spin, daemon=True)
                    for _ in range(os.cpu_count() or 1)] if args.load else []
        for spinner in spinners:
            spinner.start()
        if spinners:
            print(f"load: {len(spinners)} busy processes (one per core) for the whole run")
        consumer = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "huey_consumer"), "peerline_root.huey",
             "--workers", str(args.workers), "--worker-type", "thread", "--delay", "0.1", "--max-delay", "1",
             "--no-periodic"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started, deadline, last_note = time.monotonic(), time.monotonic() + args.max_minutes * 60, 0.0
        try:
            while time.monotonic() < deadline:
                status = Counter(r.status for r in ctx.db.list_inbox(limit=args.cases + 10))
                if status["done"] + status["parked"] >= args.cases:
                    break
                if consumer.poll() is not None:
                    raise SystemExit(f"huey_consumer exited with {consumer.returncode}")
                if time.monotonic() - last_note > 60:
                    last_note = time.monotonic()
                    print(f"  {time.monotonic() - started:5.0f}s  done {status['done']}/{args.cases}, "
                          f"Airtable requests so far {len(fake.requests) - setup_requests}", flush=True)
                time.sleep(0.5)
        finally:
            consumer.send_signal(signal.SIGINT)
            try:
                consumer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                consumer.kill()
                consumer.wait()
            for spinner in spinners:
                spinner.terminate()
                spinner.join()
        wall = time.monotonic() - started

        work = fake.requests[setup_requests:]
        status = Counter(r.status for r in ctx.db.list_inbox(limit=args.cases + 10))
        cases = [c for c in fake.records(BASE_ID, "Cases")
                 if c["fields"].get("Source Response ID", "").startswith("web:bench-")]
        distinct = len({c["fields"].get("Source Response ID") for c in cases})
        refused_429 = sum(1 for r in work if r["status"] == 429)
        elapsed = (work[-1]["at"] - work[0]["at"]) if len(work) > 1 else 0.0
        floor = len(work) / 5
        kinds = Counter(f"{r['method']} {r['path'].rsplit('/', 1)[-1]}" for r in work)

        print()
        print(f"base cases before the run      {args.base_cases}")
        print(f"machine load                   {'one busy process per core' if args.load else 'none added'} "
              f"(load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)")
        print(f"cases created in Airtable      {len(cases)} (distinct submissions {distinct}; "
              f"inbox done {status['done']}, parked {status['parked']})")
        print(f"Airtable requests              {len(work)}  =  {len(work) / max(len(cases), 1):.2f} per case")
        for kind, n in kinds.most_common():
            print(f"    {kind:<28}{n:>6}  ({n / max(len(cases), 1):.2f} per case)")
        print(f"429s met                       {refused_429}")
        print(f"busiest second                 {fake.busiest_second(BASE_ID, since=setup_requests)} requests")
        print(f"elapsed (first to last call)   {elapsed:.1f} s   (worker wall time {wall:.1f} s)")
        print(f"floor (requests / 5 per s)     {floor:.1f} s")
        print(f"elapsed / floor                {elapsed / floor if floor else float('nan'):.3f}")
        if len(cases) != args.cases or refused_429:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
