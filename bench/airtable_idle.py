"""Airtable at idle: how many requests the worker's periodic jobs make to a quiet base, with
Peerline's Airtable webhook registered, and how long an approval made in Airtable takes to
become an offer SMS.

    .venv/bin/python bench/airtable_idle.py [--hours 24] [--closed-cases 0]

How it runs (simulated time, in one process; no huey consumer):
- tests/fake_airtable.py serves as an HTTP server on 127.0.0.1; the base is made with the code
  of `flask airtable init`, config/sample_roster.csv is imported, and Peerline's webhook is
  created as `flask airtable webhook create` does (`--closed-cases N` adds N closed and
  purged cases, as a base with history has).
- The one clock (workflows/clock.py) is pinned and moved on minute by minute; the fake's own
  clock follows it. Each minute, every periodic job whose huey crontab matches that minute
  runs in this process (workflows.tasks.run_job), as huey's scheduler would start it. The
  first simulated hour (each job's first, full read) is not counted; then `--hours` of idle
  are, by job. Then an hour with the webhook unhealthy (its last delivery failed).
- The approval: a coordinator sets Status Approved on a New case in the fake (no request
  counted); the fake's ping (its body and X-Airtable-Content-MAC) is POSTed to our route
  `POST /webhooks/airtable` through Flask's test client; what the route queues
  (`Context.run_soon`) runs at once in this process, the in-process equivalent of a huey
  worker taking it. Timed on the wall clock until the offer SMS is in the outbox (the
  embedded SMS provider). Then the same with no ping (lost), counted in simulated minutes
  until the periodic poll offers it, with the webhook healthy and unhealthy.
Loopback only; bounded by the simulated span (a few seconds per simulated hour).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_airtable import FakeAirtable  # noqa: E402

BASE_ID = "appBench00000002"
TOKEN = "patBench.localonly"
PUBLIC = "https://peerline.bench.invalid"
START = datetime(2026, 12, 2, 6, 0, tzinfo=timezone.utc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=int, default=24, help="idle hours counted (after one not counted)")
    parser.add_argument("--closed-cases", type=int, default=0, help="closed, purged cases already in the base")
    args = parser.parse_args()

    fake = FakeAirtable(token=TOKEN)
    fake.add_base(BASE_ID)
    with tempfile.TemporaryDirectory(prefix="peerline-bench-") as tmp, fake.serve() as url:
        from config import settings as settings_module
        for name in settings_module.DEFAULTS:
            os.environ.pop(name, None)
        settings_module.load_dotenv = lambda *a, **k: False       # nothing from a developer's .env
        overrides = {"DATA_DIR": tmp, "SECRET_KEY": "bench", "RATELIMIT_ENABLED": "false",
                     "AIRTABLE_API_KEY": TOKEN, "AIRTABLE_BASE_ID": BASE_ID, "AIRTABLE_API_URL": url,
                     "PUBLIC_BASE_URL": PUBLIC}
        import logging

        from app import create_app
        from cli import read_roster_csv
        import peerline_root
        from integrations import airtable
        from workflows import tasks
        from workflows.model import Case

        app = create_app(overrides)
        logging.getLogger().setLevel(logging.WARNING)
        ctx = app.extensions["peerline"]
        ctx.clock.pin(START)
        fake.now = ctx.clock.now
        airtable.init_base(ctx.store, ctx.program.program.timezone)
        ctx.store.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
        made = airtable.create_webhook(ctx.store, PUBLIC)
        ctx.settings["AIRTABLE_WEBHOOK_SECRET"] = made.mac_secret_base64
        [hook] = fake.webhooks[BASE_ID]
        for n in range(args.closed_cases):
            fake.add_record(BASE_ID, "Cases", {
                "Case ID": f"PS-{1000 + n}", "Source": "Built-in", "Source Response ID": f"web:old-{n}",
                "Status": "Closed", "Urgency": "Routine", "Institution": "NCH",
                "Submitted At": "2026-09-01T12:00:00.000Z", "Closed At": "2026-09-20T12:00:00.000Z",
                "Purged At": "2026-10-21T04:23:00.000Z"})        # past retention: already purged

        jobs = tasks.periodic_jobs(peerline_root.refresh_webhooks)
        nudges = {"poll_approvals": getattr(tasks, "poll_approvals_now", tasks.poll_approvals)}
        queued: list[str] = []
        ctx.run_soon = queued.append
        client = app.test_client()

        def run_queued() -> None:
            """The in-process worker: what the web process queued, at once."""
            while queued:
                tasks.run_job(ctx, nudges[queued.pop(0)])

        def minute(by_job: Counter | None = None) -> None:
            """Run the jobs due this minute, then move the clock on a minute."""
            now = ctx.clock.now()
            for name, (function, schedule) in jobs.items():
                if schedule(now):
                    before = len(fake.requests)
                    try:
                        tasks.run_job(ctx, function)
                    except Exception as exc:            # a job's failure is the worker's log line, not ours
                        print(f"  {now:%H:%M} {name} failed: {type(exc).__name__}: {exc}")
                    if by_job is not None:
                        by_job[name] += len(fake.requests) - before
            run_queued()
            ctx.clock.advance(timedelta(minutes=1))

        def hours(n: float, by_job: Counter | None = None) -> int:
            before = len(fake.requests)
            for _ in range(int(n * 60)):
                minute(by_job)
            return len(fake.requests) - before

        def coordinator_sets(record_id: str, fields: dict) -> None:
            """An edit in the Airtable app: no API request of ours."""
            if hasattr(fake, "edit_record"):
                fake.edit_record(BASE_ID, "Cases", record_id, fields)
            else:           # an older fake: change the cell in place
                fake.table(BASE_ID, "Cases")["records"][record_id]["fields"].update(fields)

        def new_case(n: int) -> Case:
            now = ctx.clock.now()
            return ctx.store.create_case(Case(
                case_id=f"PS-{4800 + n}", source="web", source_response_id=f"web:idle-{n}", status="New",
                for_whom="Self", requester_name="Bench Participant", requester_phone="+15550100999",
                preferred_contact="Text message", institution="NCH", role="Nurse", role_preference="Any",
                department_preference="Any", urgency="Routine", submitted_at=now,
                review_due=now + timedelta(hours=72)))

        def offered(case: Case) -> bool:
            return any(m.case_id == case.case_id and "YES" in m.body for m in ctx.db.outbox_list())

        # ---- idle ----
        print(f"fake Airtable at {url}: base made, roster imported, webhook {hook['id']} registered, "
              f"{args.closed_cases} closed cases; simulated start {START:%Y-%m-%d %H:%M} UTC")
        hours(1)                                              # first reads: not counted
        by_job: Counter = Counter()
        idle = hours(args.hours, by_job)
        per_hour = idle / args.hours
        print()
        print(f"idle, webhook healthy, {args.hours} simulated hours")
        print(f"Airtable requests per idle hour    {per_hour:8.2f}")
        print(f"Airtable requests per idle day     {per_hour * 24:8.1f}")
        print(f"Airtable requests per 30-day month {per_hour * 24 * 30:8.0f}")
        for name, count in sorted(by_job.items(), key=lambda kv: -kv[1]):
            if count:
                print(f"    {name:<28}{count / args.hours * 24:8.1f} a day")

        # ---- approval with the ping ----
        case = new_case(1)
        hours(1 / 60)
        start = time.perf_counter()
        coordinator_sets(case.record_id, {"Status": "Approved"})
        body = fake.ping_body(BASE_ID, hook["id"])
        answer = client.post("/webhooks/airtable", data=body, headers={
            "Content-Type": "application/json", "X-Airtable-Content-MAC": fake.mac(BASE_ID, hook["id"], body)})
        run_queued()
        took = time.perf_counter() - start
        print()
        print(f"approval -> offer SMS, ping to our route ({answer.status_code}), in-process worker: "
              f"{took:.2f} s wall, {'offered' if offered(case) else 'NOT offered'} (simulated clock still)")

        # ---- approval, ping lost, webhook healthy: the safety-net poll ----
        case = new_case(2)
        hours(10 / 60)
        coordinator_sets(case.record_id, {"Status": "Approved"})
        waited = 0
        while not offered(case) and waited < 180:
            minute()
            waited += 1
        print(f"approval -> offer SMS, ping lost, webhook healthy: {waited} simulated minutes "
              f"({'offered' if offered(case) else 'NOT offered'})")

        # ---- webhook unhealthy: Airtable's last delivery to us failed ----
        hook["lastNotificationResult"] = {"success": False, "error": {"message": "HTTP 503"},
                                          "completionTimestamp": ctx.clock.now().isoformat(),
                                          "durationMs": 12.0, "retryNumber": 3, "willBeRetried": True}
        while not jobs["refresh_airtable_webhooks"][1](ctx.clock.now()):
            minute()
        minute()                                              # the check notes the webhook unhealthy
        unhealthy_by_job: Counter = Counter()
        unhealthy = hours(1, unhealthy_by_job)
        print(f"idle, webhook unhealthy (last delivery failed): {unhealthy} requests in the hour "
              f"({', '.join(f'{k} {v}' for k, v in unhealthy_by_job.most_common() if v)})")
        case = new_case(3)
        hours(1 / 60)
        coordinator_sets(case.record_id, {"Status": "Approved"})
        waited = 0
        while not offered(case) and waited < 180:
            minute()
            waited += 1
        print(f"approval -> offer SMS, no ping, webhook unhealthy: {waited} simulated minutes "
              f"({'offered' if offered(case) else 'NOT offered'})")


if __name__ == "__main__":
    main()
