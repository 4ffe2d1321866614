"""Crisis under a backlog: with routine cases queued, how soon does a crisis request from each
source (the built-in /request form, Qualtrics, REDCap) reach the on-call reviewers' phones, how
late do the periodic jobs run, and how often is a row queued again while still queued?

    .venv/bin/python bench/crisis.py [--cases 1000] [--observe 150] [--backends sqlite,redis]

For each queue backend (the embedded SQLite; Redis when REDIS_URL or 127.0.0.1:6379 answers):
one local fake HTTP server on 127.0.0.1 plays Twilio (Messages create, the documented JSON),
Qualtrics (GET a response, the documented `result.values`) and REDCap (POST content=record, a
JSON list); the service's settings point at it. The sample roster is imported, `--cases`
routine submissions are recorded and queued, and after they have waited a minute (a worker
restarted during a backlog) a real worker process starts: huey's Consumer on
`peerline_root.huey` with the Procfile's options (4 threads), recording huey's `enqueued` and
`executing` signals to a file. A few seconds later one crisis request arrives from each source
through the web app (in this process, Flask's test client: the crisis form post, and the
Qualtrics and REDCap notices, whose answers the fake then serves as a crisis).

Prints, per source, the time from the webhook's 2xx to the fake Twilio receiving the first
on-call reviewer's crisis SMS (the SMS handed to the provider); per periodic job, how late its
runs started after the scheduler queued them (a job still waiting at the end counts as late as
it had waited); and how many process_submission tasks the worker queued for rows that were
still queued. Bounded: the worker runs `--observe` seconds after the first crisis request.
Loopback only.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_airtable import serve_on_loopback  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
SURVEY = "SV_eA1b2C3d4E5f6G7"            # config/forms/qualtrics.toml [survey] ids
QUALTRICS_HOOK, REDCAP_HOOK = "bench-qualtrics-hook-token", "bench-redcap-hook-token"
ACCOUNT = "AC" + "0" * 32
INSTITUTIONS = ("RRMC", "NCH", "SBMC", "LCH")
TARGET_SECONDS = 5


def routine_answers(n: int) -> dict:
    return {"for_whom": "Self", "requester_name": f"Bench Participant {n}", "requester_phone": "+15550100999",
            "preferred_contact": "Text message", "institution": INSTITUTIONS[n % 4], "department": "Surgery",
            "role": "Nurse", "specialty": "Perioperative", "role_preference": "Any",
            "department_preference": "Any", "urgency": "Routine"}


# ---------------------------------------------------------------------------- the fake providers

class Fakes:
    """Twilio, Qualtrics and REDCap on one loopback server; every request kept with its time."""

    def __init__(self):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.sids = iter(range(1, 10**9))
        self.twilio_template = json.loads((FIXTURES / "twilio" / "api__message_create__accepted.json").read_text())
        self.qualtrics = json.loads((FIXTURES / "qualtrics" / "response__complete.json").read_text())
        self.qualtrics["result"]["values"]["QID13"] = 3                    # Crisis
        self.redcap = json.loads((FIXTURES / "redcap" / "records__complete.json").read_text())[0]
        self.redcap["urgency"] = "3"                                       # Crisis

    def answer(self, method: str, path: str, form: dict) -> tuple[int, object]:
        if path.startswith("/2010-04-01/Accounts/") and path.endswith("/Messages.json"):
            if method == "POST":
                sid = f"SM{next(self.sids):032x}"
                return 201, {**self.twilio_template, "sid": sid, "to": form.get("To", ""), "body": form.get("Body", "")}
            return 200, {"messages": [], "next_page_uri": None, "page": 0, "page_size": 200, "uri": path}
        found = re.fullmatch(rf"/API/v3/surveys/{SURVEY}/responses/(R_[A-Za-z0-9]+)", path)
        if method == "GET" and found:
            result = {**self.qualtrics["result"], "responseId": found.group(1)}
            return 200, {**self.qualtrics, "result": result}
        if method == "POST" and path == "/api/":
            if form.get("content") == "record" and "records[0]" in form:
                return 200, [{**self.redcap, "record_id": form["records[0]"]}]
            return 200, []                                               # the catch-up's export: nothing
        return 503, {"error": "not served by the bench"}

    @contextmanager
    def serve(self):
        fakes = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                at = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
                path = urlsplit(self.path).path
                form = {k: v[0] for k, v in parse_qs(body).items()}
                status, payload = fakes.answer(self.command, path, form)
                with fakes.lock:
                    fakes.requests.append({"at": at, "method": self.command, "path": path,
                                           "to": form.get("To", ""), "body": form.get("Body", "")})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, *args):
                pass

        with serve_on_loopback(Handler) as url:
            yield url


# ---------------------------------------------------------------------------- the worker process

def run_worker(events_path: str, workers: int) -> None:
    """A real worker: huey's Consumer on the root's queue, with the Procfile's options, writing
    each task queued (by this process) and each task started to `events_path`."""
    import logging
    from huey import signals as S
    import peerline_root

    logging.basicConfig(level=logging.WARNING)
    huey = peerline_root.huey
    out, lock = open(events_path, "a", buffering=1), threading.Lock()

    @huey.signal(S.SIGNAL_ENQUEUED, S.SIGNAL_EXECUTING)
    def record(signal_name, task, *args):
        line = json.dumps({"t": time.time(), "signal": signal_name, "name": task.name,
                           "args": list(task.args or ()), "eta": task.eta is not None})
        with lock:
            out.write(line + "\n")

    consumer = huey.create_consumer(workers=workers, worker_type="thread", initial_delay=0.1, max_delay=2,
                                    flush_locks=True)
    consumer.run()


# ---------------------------------------------------------------------------- one backend

def claim_redis_db(base_url: str):
    """A Redis database of our own (1-15, claimed with SET NX as the tests do), emptied."""
    import redis
    for db in range(1, 16):
        conn = redis.Redis.from_url(f"{base_url}/{db}", socket_connect_timeout=2)
        if conn.set("peerline-test-claim", f"bench-crisis-{os.getpid()}", nx=True, ex=1800):
            for key in conn.scan_iter():
                if key != b"peerline-test-claim":
                    conn.delete(key)
            return conn, f"{base_url}/{db}"
    raise SystemExit("every Redis database 1-15 is claimed")


def redis_base_url() -> str | None:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379"
    url = re.sub(r"/\d+$", "", url)
    try:
        import redis
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return url
    except Exception:
        return None


def web_crisis(client) -> str:
    """The built-in form, in crisis; returns the submission's inbox key."""
    html = client.get("/request").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    submission = re.search(r'name="submission_id" type="hidden" value="([^"]*)"', html).group(1)
    answer = client.post("/request", data={**routine_answers(0), "csrf_token": token, "submission_id": submission,
                                           "requester_name": "Bench Crisis", "urgency": "Crisis"})
    assert answer.status_code == 303, answer.status_code
    return f"web:{submission}"


def qualtrics_crisis(client) -> str:
    response_id = "R_benchCrisis" + os.urandom(4).hex()
    body = urlencode({"Topic": f"benchbrand.surveyengine.completedResponse.{SURVEY}", "Status": "Complete",
                      "SurveyID": SURVEY, "ResponseID": response_id, "BrandID": "benchbrand"})
    answer = client.post(f"/webhooks/qualtrics?token={QUALTRICS_HOOK}", data=body,
                         content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 200, answer.status_code
    return f"qualtrics:{response_id}"


def redcap_crisis(client, fake_url: str) -> str:
    record = str(9000 + int.from_bytes(os.urandom(2), "big"))
    body = urlencode({"project_id": "12", "username": "[survey respondent]", "instrument": "peer_support_request",
                      "record": record, "peer_support_request_complete": "2", "redcap_url": f"{fake_url}/",
                      "project_url": f"{fake_url}/redcap_v14.5.2/index.php?pid=12"})
    answer = client.post(f"/webhooks/redcap?token={REDCAP_HOOK}", data=body,
                         content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 200, answer.status_code
    return record


def run_backend(name: str, args, redis_url: str | None = None) -> dict:
    fakes = Fakes()
    with tempfile.TemporaryDirectory(prefix="peerline-bench-crisis-") as tmp, fakes.serve() as fake_url:
        from config import settings as settings_module
        env = {k: v for k, v in os.environ.items() if k not in settings_module.DEFAULTS}
        env.update({k: "" for k in settings_module.DEFAULTS})     # nothing from .env or the shell
        env.update(DATA_DIR=tmp, SECRET_KEY="bench", PUBLIC_BASE_URL="https://peerline.bench.invalid",
                   RATELIMIT_ENABLED="false", PYTHONPATH=str(ROOT),
                   TWILIO_ACCOUNT_SID=ACCOUNT, TWILIO_AUTH_TOKEN="bench-twilio-token",
                   TWILIO_MESSAGING_SERVICE_SID="MG" + "0" * 32, TWILIO_API_URL=fake_url,
                   QUALTRICS_API_URL=fake_url, QUALTRICS_API_TOKEN="bench-qualtrics-token",
                   QUALTRICS_WEBHOOK_TOKEN=QUALTRICS_HOOK,
                   REDCAP_API_URL=f"{fake_url}/api/", REDCAP_API_TOKEN="BENCH0123456789ABCDEF0123456789AB",
                   REDCAP_PROJECT_ID="12", REDCAP_WEBHOOK_TOKEN=REDCAP_HOOK)
        if redis_url:
            env["REDIS_URL"] = redis_url
        env = {k: v for k, v in env.items() if v != ""}
        for key in settings_module.DEFAULTS:
            os.environ.pop(key, None)
        os.environ.update(env)

        from app import create_app
        from cli import read_roster_csv
        from integrations import database
        from workflows.inbox import record_and_enqueue
        from workflows.tasks import describe_schedule, periodic_jobs
        app = create_app()
        ctx = app.extensions["peerline"]
        roster = read_roster_csv(ROOT / "config" / "sample_roster.csv")[0]
        ctx.store.import_roster(roster)
        on_call = {r.phone for r in roster.reviewers if r.on_call}
        client = app.test_client()

        backlog_at = time.time()
        for n in range(args.cases):
            record_and_enqueue(ctx, source="web", source_key=f"web:bench-{n:05d}", payload={"answers": routine_answers(n)})
        print(f"[{name}] {args.cases} routine submissions recorded and queued in {time.time() - backlog_at:.1f} s; "
              f"they wait {args.wait:.0f} s before the worker starts", flush=True)
        time.sleep(max(0.0, backlog_at + args.wait - time.time()))

        events_path = os.path.join(tmp, "events.jsonl")
        log = open(os.path.join(tmp, "worker.log"), "w")
        worker = subprocess.Popen([sys.executable, __file__, "--worker", events_path, "--workers", str(args.workers)],
                                  cwd=ROOT, env=env, stdout=log, stderr=log)
        started = time.time()
        try:
            time.sleep(5)     # the worker is up and busy with the backlog
            sent, behind = {}, {}

            def unfinished() -> int:
                return len(ctx.db.list_inbox(("new", "retry", "processing"), limit=args.cases + 100))
            behind["/request form"] = unfinished()
            key = web_crisis(client)
            sent["/request form"] = (time.time(), key)
            time.sleep(2)
            behind["Qualtrics"] = unfinished()
            key = qualtrics_crisis(client)
            sent["Qualtrics"] = (time.time(), key)
            time.sleep(2)
            behind["REDCap"] = unfinished()
            record = redcap_crisis(client, fake_url)
            sent["REDCap"] = (time.time(), record)
            first = sent["/request form"][0]
            while time.time() < first + args.observe:
                if worker.poll() is not None:
                    raise SystemExit(f"the worker exited with {worker.returncode}; see its log")
                time.sleep(0.5)
        finally:
            ended = time.time()
            worker.send_signal(signal.SIGINT)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

        # The crisis SMS: the fake Twilio's first POST to an on-call reviewer naming the case.
        by_source = {}
        rows = ctx.db.list_inbox(limit=args.cases + 100)
        for label, (at, key) in sent.items():
            if label == "REDCap":
                keys = [r.source_key for r in rows if r.source == "redcap"]
                key = keys[0] if keys else ""
            case = ctx.store.find_case(source_response_id=key) if key else None
            sms = [r["at"] for r in fakes.requests if case and r["method"] == "POST" and r["to"] in on_call
                   and f"ref {case.ref}" in r["body"] and "Messages.json" in r["path"]]
            by_source[label] = (min(sms) - at) if sms else None

        # Periodic lateness and doubled queueing, from the worker's signals.
        events = [json.loads(line) for line in open(events_path)]
        jobs = periodic_jobs()
        queued, late = defaultdict(list), defaultdict(list)
        pending = Counter({r.id: 1 for r in rows})     # every row was queued once by the web side
        doubled = 0
        for e in events:
            if e["name"] in jobs:
                if e["signal"] == "enqueued":
                    queued[e["name"]].append(e["t"])
                elif queued[e["name"]]:
                    late[e["name"]].append(e["t"] - queued[e["name"]].pop(0))
            elif e["name"] == "process_submission":
                inbox_id = e["args"][0]
                if e["signal"] == "enqueued":
                    if pending[inbox_id] > 0 and not e["eta"]:
                        doubled += 1
                    pending[inbox_id] += 1
                elif pending[inbox_id] > 0:
                    pending[inbox_id] -= 1
        waiting = {job: [ended - t for t in times] for job, times in queued.items()}
        done = sum(1 for r in ctx.db.list_inbox(("done",), limit=args.cases + 100))
        database.dispose_engines()
        return {"crisis": by_source, "behind": behind, "late": late, "waiting": waiting, "doubled": doubled, "done": done,
                "ran": ended - started, "periods": {job: describe_schedule(s) for job, (_, s) in jobs.items()}}


def report(name: str, result: dict, cases: int) -> None:
    print(f"\n== {name}: {cases} routine cases queued; worker ran {result['ran']:.0f} s "
          f"and finished {result['done']} submissions")
    print(f"crisis: webhook 2xx -> on-call SMS handed to the (fake) Twilio   (target {TARGET_SECONDS} s)")
    for label, seconds in result["crisis"].items():
        shown = f"{seconds:6.2f} s" if seconds is not None else "  none within the run"
        print(f"    {label:<16}{shown}   ({result['behind'][label]} routine submissions still unfinished when it came)")
    print("periodic jobs: how late they started after being queued (max; waiting = still queued at the end)")
    for job in sorted(set(result["late"]) | set(result["waiting"])):
        runs, waits = result["late"].get(job, []), result["waiting"].get(job, [])
        worst = max(runs + waits) if runs or waits else 0.0
        print(f"    {job:<24}{result['periods'].get(job, ''):<22} ran {len(runs):>2}, max late {worst:6.1f} s"
              + (f", {len(waits)} still waiting" if waits else ""))
    print(f"rows queued again while still queued: {result['doubled']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--wait", type=float, default=65, help="seconds the backlog waits before the worker starts")
    parser.add_argument("--observe", type=float, default=150, help="seconds the worker runs after the first crisis")
    parser.add_argument("--backends", default="sqlite,redis")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(args.worker, args.workers)

    results = {}
    for backend in args.backends.split(","):
        if backend == "sqlite":
            results["sqlite"] = run_backend("sqlite", args)
        elif backend == "redis":
            base = redis_base_url()
            if base is None:
                print("Redis: not reachable (REDIS_URL or 127.0.0.1:6379); skipped")
                continue
            conn, url = claim_redis_db(base)
            try:
                results["redis"] = run_backend("redis", args, redis_url=url)
            finally:
                conn.flushdb()
    for name, result in results.items():
        report(name, result, args.cases)


if __name__ == "__main__":
    main()
