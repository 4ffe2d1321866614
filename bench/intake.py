"""Intake acknowledgement benchmark: how fast the web process takes a submission and answers.

Starts gunicorn with the Procfile's settings (config/gunicorn.conf.py) on loopback: with a bare
Flask route that returns 200 (the baseline), then with the real app, and drives each with the
same closed-loop load (CONNECTIONS keep-alive clients for SECONDS per route). Does this ROUNDS
times in turn and prints, per route, the medians of requests/s and p50/p99 latency and of the
ratios to the baseline of the same round, with the machine's load average, and the server's
CPU time per request with the busiest worker's share of it. The load starts once every worker
has booted (`start_gunicorn`), so both routes are measured on the Procfile's two processes.

    .venv/bin/python bench/intake.py [--seconds 3] [--rounds 3] [--connections 16] [--database-url URL]

The load generator shares the machine's cores with the server, so absolute figures are
pessimistic; the ratios are the point. Bounded in time (about ROUNDS x 4 x SECONDS plus
start-ups); loopback only.
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import runpy
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FORM = {"for_whom": "Self", "requester_name": "Bench Participant", "requester_phone": "+15550100999",
        "preferred_contact": "Text message", "institution": "RRMC", "department": "Surgery",
        "role": "Nurse", "specialty": "Perioperative", "role_preference": "Same",
        "department_preference": "Any", "urgency": "Routine"}


#: The Procfile's web settings, for the real app and the baseline alike.
GUNICORN_CONF = ROOT / "config" / "gunicorn.conf.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(app_spec: str, env: dict) -> tuple[subprocess.Popen, int]:
    """gunicorn on a free port, answering, with every worker booted: clients' keep-alive
    connections are accepted once, so a load that starts while one worker is still booting
    lands on the other alone and measures one process, not the Procfile's two."""
    port = free_port()
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    started = time.monotonic()
    proc = subprocess.Popen([gunicorn, "-c", str(GUNICORN_CONF), "--bind", f"127.0.0.1:{port}", app_spec],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = started + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise SystemExit(f"gunicorn {app_spec} did not start")
    # gunicorn forks its workers together; the first answered after booting, so the others
    # are booted once they exist and have lived as long as the first took.
    booted = time.monotonic() - started
    workers = runpy.run_path(str(GUNICORN_CONF))["workers"]
    while len(worker_pids(proc)) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(booted)
    return proc, port


def worker_pids(proc: subprocess.Popen) -> list[int]:
    """The gunicorn arbiter's worker processes (its children), from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == proc.pid:
                pids.append(int(entry))
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def csrf_session(port: int) -> tuple[str, str]:
    """A session cookie and its CSRF token, as a browser would get from GET /request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/request")
    resp = conn.getresponse()
    html = resp.read().decode()
    cookie = resp.getheader("Set-Cookie").split(";", 1)[0]
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    return cookie, token


def drive(port: int, make_request, seconds: float, connections: int, workers: list[int] = ()) -> dict:
    """Closed-loop load: each client sends its next request when the last one is answered.
    With the server's `workers` (pids), also the server's CPU time per request and the busiest
    worker's share of it (0.5 with two workers evenly loaded)."""
    cpu_before = {pid: cpu_seconds(pid) for pid in workers}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine, codes = [], {}
        while time.monotonic() < stop:
            method, path, body, headers = make_request()
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                code = resp.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                code = type(exc).__name__
            mine.append(time.perf_counter() - t0)
            codes[code] = codes.get(code, 0) + 1
        with lock:
            latencies.extend(mine)
            for k, v in codes.items():
                statuses[k] = statuses.get(k, 0) + v

    threads = [threading.Thread(target=client) for _ in range(connections)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    latencies.sort()
    used = [cpu_seconds(pid) - before for pid, before in cpu_before.items()]
    return {"cpu_ms": 1000 * sum(used) / max(1, len(latencies)) if used else float("nan"),
            "busiest": max(used) / sum(used) if used and sum(used) else float("nan"),
            "requests": len(latencies), "rps": len(latencies) / elapsed,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000, "statuses": statuses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3, help="per route and round")
    parser.add_argument("--rounds", type=int, default=3, help="baseline and real app in turn, this many times")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--database-url", help="measure on this DATABASE_URL (e.g. a PostgreSQL "
                        "database) instead of the embedded SQLite")
    args = parser.parse_args()

    from config.settings import DEFAULTS
    data_dir = tempfile.mkdtemp(prefix="peerline-bench-")
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
    # The form's rate limit is on, as deployed, with limits the benchmark never reaches: its
    # counting is measured, not its refusals.
    env.update(DATA_DIR=data_dir, SECRET_KEY="bench", RATELIMIT_ENABLED="true",
               REQUEST_RATE_LIMIT=HIGH_LIMITS, REQUEST_RATE_LIMIT_PER_ADDRESS=HIGH_LIMITS,
               PYTHONPATH=str(ROOT), **WEBHOOK_SETTINGS)
    if args.database_url:
        env["DATABASE_URL"] = args.database_url

    # The schema is made before the server starts, as a deploy would: the benchmark measures
    # requests, not two workers racing to create a fresh database.
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "flask"), "--app", "app", "inbox", "list"],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    load_before = os.getloadavg()[0]
    rounds: list[dict] = []
    for _ in range(args.rounds):   # in turn, so that a change in the machine's load hits both
        rounds.append(one_round(env, args.seconds, args.connections))
    load_after = os.getloadavg()[0]

    conf = runpy.run_path(str(GUNICORN_CONF))
    store = "PostgreSQL" if args.database_url else "SQLite (embedded)"
    print(f"gunicorn {conf['workers']} {conf.get('worker_class', 'sync')} workers x {conf.get('threads', 1)} "
          f"threads (config/gunicorn.conf.py), {args.connections} connections, {args.seconds:g} s per route, "
          f"{args.rounds} rounds, loopback, inbox and queue on {store}; machine load average "
          f"{load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} cores")
    print("medians over the rounds; each ratio is taken within its round. CPU ms/req: the server's "
          "CPU time (all workers) per request; busiest: the busiest worker's share of it (0.50 = even)")
    print(f"{'route':<32} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'rps ratio':>9} {'p99 ratio':>9} {'CPU ms/req':>10} {'busiest':>7}  statuses")
    median = statistics.median
    for name in rounds[0]:
        runs = [r[name] for r in rounds]
        statuses: dict = {}
        for r in runs:
            for code, n in r["statuses"].items():
                statuses[code] = statuses.get(code, 0) + n
        rps_ratio = median(r[name]["rps"] / r[BASELINE]["rps"] for r in rounds)
        p99_ratio = median(r[name]["p99"] / r[BASELINE]["p99"] for r in rounds)
        print(f"{name:<32} {sum(r['requests'] for r in runs):>8} {median(r['rps'] for r in runs):>8.0f} "
              f"{median(r['p50'] for r in runs):>8.1f} {median(r['p99'] for r in runs):>8.1f} "
              f"{rps_ratio:>9.2f} {p99_ratio:>9.2f} {median(r['cpu_ms'] for r in runs):>10.2f} "
              f"{median(r['busiest'] for r in runs):>7.2f}  {statuses}")


BASELINE = "bare Flask route (baseline)"
#: Two windows per limit, like the defaults ("5 per minute;30 per hour"), never reached.
HIGH_LIMITS = "1000000 per minute;10000000 per hour"


def one_round(env: dict, seconds: float, connections: int) -> dict:
    """The baseline, then every route of the real app, each for `seconds`."""
    results = {}
    bare, port = start_gunicorn("bench.bare_app:create_app()", env)
    try:
        results[BASELINE] = drive(
            port, lambda: ("POST", "/bare", urlencode(FORM),
                           {"Content-Type": "application/x-www-form-urlencoded"}),
            seconds, connections, worker_pids(bare))
    finally:
        bare.terminate()
        bare.wait()

    real, port = start_gunicorn("app:create_app()", env)
    try:
        cookie, token = csrf_session(port)

        def request_form():
            body = urlencode({**FORM, "csrf_token": token, "submission_id": uuid.uuid4().hex})
            return "POST", "/request", body, {"Content-Type": "application/x-www-form-urlencoded",
                                              "Cookie": cookie}
        workers = worker_pids(real)
        results["POST /request"] = drive(port, request_form, seconds, connections, workers)
        for name, make in extra_routes():
            results[name] = drive(port, make, seconds, connections, workers)
    finally:
        real.terminate()
        real.wait()
    return results


WEBHOOK_TOKEN = "bench-webhook-token"
FORM_ENCODED = {"Content-Type": "application/x-www-form-urlencoded"}


def extra_routes():
    """The form systems' webhook routes, each notice with a fresh id (a repeated id would
    measure only the duplicate path). Bodies are the test fixtures, in the real formats."""
    from urllib.parse import parse_qsl
    fixtures = ROOT / "tests" / "fixtures"
    qualtrics = dict(parse_qsl((fixtures / "qualtrics" / "completed_response__plain.txt").read_text().strip()))
    redcap = dict(parse_qsl((fixtures / "redcap" / "det__survey_complete.txt").read_text().strip()))

    def qualtrics_notice():
        body = urlencode({**qualtrics, "ResponseID": "R_" + uuid.uuid4().hex[:15]})
        return "POST", f"/webhooks/qualtrics?token={WEBHOOK_TOKEN}", body, FORM_ENCODED

    def redcap_trigger():
        body = urlencode({**redcap, "record": str(uuid.uuid4().int % 10**9)})
        return "POST", f"/webhooks/redcap?token={WEBHOOK_TOKEN}", body, FORM_ENCODED

    return [("POST /webhooks/qualtrics", qualtrics_notice), ("POST /webhooks/redcap", redcap_trigger)]


#: Form systems configured for the run; their APIs are never called (no worker runs). REDCap's
#: is on the server the fixture's triggers name in `redcap_url`, as in a program set up right: a
#: trigger from another server logs a warning, which is not what a running program measures.
WEBHOOK_SETTINGS = {
    "QUALTRICS_API_URL": "http://127.0.0.1:9", "QUALTRICS_API_TOKEN": "unused",
    "QUALTRICS_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
    "REDCAP_API_URL": "https://redcap.example.edu/api/", "REDCAP_API_TOKEN": "unused",
    "REDCAP_PROJECT_ID": "12", "REDCAP_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
}


if __name__ == "__main__":
    main()
