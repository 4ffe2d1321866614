"""Intake acknowledgement benchmark: how fast the web process takes a submission and answers.

Starts gunicorn twice with the Procfile's settings (2 sync workers) on loopback: once with the
real app, once with a bare Flask route that returns 200 (the baseline), and drives each with
the same closed-loop load (CONNECTIONS keep-alive clients for SECONDS). Prints requests/s and
p50/p99 latency of each route and the ratios to the baseline.

    .venv/bin/python bench/intake.py [--seconds 5] [--connections 16]

The load generator shares the machine's cores with the server, so absolute figures are
pessimistic; the ratios are the point. Bounded in time; loopback only.
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(app_spec: str, env: dict) -> tuple[subprocess.Popen, int]:
    port = free_port()
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    proc = subprocess.Popen([gunicorn, "--bind", f"127.0.0.1:{port}", "--workers", "2", app_spec],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"gunicorn {app_spec} did not start")


def csrf_session(port: int) -> tuple[str, str]:
    """A session cookie and its CSRF token, as a browser would get from GET /request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/request")
    resp = conn.getresponse()
    html = resp.read().decode()
    cookie = resp.getheader("Set-Cookie").split(";", 1)[0]
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    return cookie, token


def drive(port: int, make_request, seconds: float, connections: int) -> dict:
    """Closed-loop load: each client sends its next request when the last one is answered."""
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
    return {"requests": len(latencies), "rps": len(latencies) / elapsed,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000, "statuses": statuses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--database-url", help="measure on this DATABASE_URL (e.g. a PostgreSQL "
                        "database) instead of the embedded SQLite")
    args = parser.parse_args()

    from config.settings import DEFAULTS
    data_dir = tempfile.mkdtemp(prefix="peerline-bench-")
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
    env.update(DATA_DIR=data_dir, SECRET_KEY="bench", RATELIMIT_ENABLED="false",
               PYTHONPATH=str(ROOT), **WEBHOOK_SETTINGS)
    if args.database_url:
        env["DATABASE_URL"] = args.database_url

    results = {}
    bare, port = start_gunicorn("bench.bare_app:create_app()", env)
    try:
        results["bare Flask route (baseline)"] = drive(
            port, lambda: ("POST", "/bare", urlencode(FORM),
                           {"Content-Type": "application/x-www-form-urlencoded"}),
            args.seconds, args.connections)
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
        results["POST /request"] = drive(port, request_form, args.seconds, args.connections)
        for name, make in extra_routes():
            results[name] = drive(port, make, args.seconds, args.connections)
    finally:
        real.terminate()
        real.wait()

    base = results["bare Flask route (baseline)"]
    store = "PostgreSQL" if args.database_url else "SQLite (embedded)"
    print(f"gunicorn 2 sync workers, {args.connections} connections, {args.seconds:g} s per route, "
          f"loopback, inbox and queue on {store}")
    print(f"{'route':<32} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'rps ratio':>9} {'p99 ratio':>9}  statuses")
    for name, r in results.items():
        print(f"{name:<32} {r['requests']:>8} {r['rps']:>8.0f} {r['p50']:>8.1f} {r['p99']:>8.1f} "
              f"{r['rps'] / base['rps']:>9.2f} {r['p99'] / base['p99']:>9.2f}  {r['statuses']}")


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


#: Form systems configured for the run; their APIs are never called (no worker runs).
WEBHOOK_SETTINGS = {
    "QUALTRICS_API_URL": "http://127.0.0.1:9", "QUALTRICS_API_TOKEN": "unused",
    "QUALTRICS_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
    "REDCAP_API_URL": "http://127.0.0.1:9/api/", "REDCAP_API_TOKEN": "unused",
    "REDCAP_PROJECT_ID": "12", "REDCAP_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
}


if __name__ == "__main__":
    main()
