"""Airtable calls benchmark: 200 submissions through the real worker against a fake Airtable
that enforces Airtable's limit (5 requests a second per base, 429 and 30 s of refusals past it).

    .venv/bin/python bench/airtable_calls.py [--cases 200] [--workers 4] [--max-minutes 40]

Starts tests/fake_airtable.py as an HTTP server on 127.0.0.1, creates the base's tables with
the code of `flask airtable init`, imports config/sample_roster.csv into it, records the
submissions in the inbox of a temporary DATA_DIR, queues them, and runs a real
`huey_consumer peerline_root.huey` process (thread workers, as the Procfile) with the
environment pointing at the fake. Prints Airtable requests per case (and by kind), 429s met,
cases created, and the elapsed time against the floor (requests / 5 per second).
Bounded in time (--max-minutes); loopback only.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=200)
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
        assert len(created) == 6 and not refused, (created, refused)
        counts = ctx.store.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
        setup_requests = len(fake.requests)
        print(f"fake Airtable at {url}: tables created, roster imported ({counts}) "
              f"in {setup_requests} requests")

        for n in range(args.cases):
            inbox_id, _ = ctx.db.record_submission(source="web", source_key=f"web:bench-{n:04d}",
                                                   payload={"answers": answers(n)})
            ctx.enqueue(inbox_id)
        print(f"{args.cases} submissions in the inbox and queued; starting huey_consumer "
              f"({args.workers} thread workers)")

        consumer = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "huey_consumer"), "peerline_root.huey",
             "--workers", str(args.workers), "--worker-type", "thread", "--delay", "0.1", "--max-delay", "1"],
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
        wall = time.monotonic() - started

        work = fake.requests[setup_requests:]
        status = Counter(r.status for r in ctx.db.list_inbox(limit=args.cases + 10))
        cases = fake.records(BASE_ID, "Cases")
        distinct = len({c["fields"].get("Source Response ID") for c in cases})
        refused_429 = sum(1 for r in work if r["status"] == 429)
        elapsed = (work[-1]["at"] - work[0]["at"]) if len(work) > 1 else 0.0
        floor = len(work) / 5
        kinds = Counter(f"{r['method']} {r['path'].rsplit('/', 1)[-1]}" for r in work)

        print()
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
