"""Embedded worker drain benchmark: how fast a real worker turns a backlog of routine
submissions into cases, beside a bare huey no-op task rate on the same queue storage.

    .venv/bin/python bench/drain.py [--cases 1000] [--database sqlite|postgres] [--max-minutes 20]

In a temporary DATA_DIR (no Airtable: the case store is our own database; messages go to the
outbox), imports config/sample_roster.csv, records N routine submissions in the inbox and queues
them, then starts a real `huey_consumer peerline_root.huey` with the Procfile's worker options
and waits until every inbox row is done. Before that, in the same run, the same consumer options
drain N no-op tasks queued on the same kind of queue storage (`noop_huey` below): the floor the
queue itself sets. `--database postgres` runs both against a fresh PostgreSQL database on
127.0.0.1 (BENCH_POSTGRES_URL or TEST_POSTGRES_URL names the server's admin database), created
and dropped here; the queue is then huey on that PostgreSQL.

Prints cases/s, no-op tasks/s and their ratio, and committed transactions and SQL statements
per case: every commit and every statement the worker process makes through SQLAlchemy, counted
by listeners on the `Engine` "commit" and "before_cursor_execute" events that a `sitecustomize`
module on the consumer's PYTHONPATH installs (periodic jobs running during the drain included;
huey's own queue writes are not SQLAlchemy's and are not counted; an executemany is one). Rates are measured from the first claimed row (first dequeued no-op) to the last
one done. Bounded in time (--max-minutes); loopback only.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

INSTITUTIONS = ("RRMC", "NCH", "SBMC", "LCH")
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL",
                              os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))

#: Installed in the consumer through PYTHONPATH: counts SQLAlchemy commits and statements,
#: written at exit.
SITECUSTOMIZE = '''
import atexit, os, threading
import sqlalchemy as _sa
_count, _lock = [0, 0], threading.Lock()
def _commit(conn):
    with _lock:
        _count[0] += 1
def _statement(*_):
    with _lock:
        _count[1] += 1
_sa.event.listen(_sa.Engine, "commit", _commit)
_sa.event.listen(_sa.Engine, "before_cursor_execute", _statement)
def _write():
    with open(os.environ["PEERLINE_BENCH_COMMITS"], "w") as f:
        f.write(f"{_count[0]} {_count[1]}")
atexit.register(_write)
'''


def answers(n: int) -> dict:
    return {"for_whom": "Self", "requester_name": f"Bench Participant {n}", "requester_phone": "+15550100999",
            "preferred_contact": "Text message", "institution": INSTITUTIONS[n % 4], "department": "Surgery",
            "role": "Nurse", "specialty": "Perioperative", "role_preference": "Any",
            "department_preference": "Any", "urgency": "Routine"}


def _noop_huey_of(values: dict):
    """A huey of its own queue name on the same storage as the service's queue, with one no-op task."""
    from huey import Huey, PostgresHuey

    import peerline_root
    url = values.get("DATABASE_URL") or ""
    if url.startswith("postgres"):
        huey = PostgresHuey("bench-noop", dsn="postgresql://" + url.split("://", 1)[1], results=False)
    else:
        os.makedirs(values["DATA_DIR"], exist_ok=True)
        huey = Huey("bench-noop", storage_class=peerline_root.QueueStorage, results=False,
                    filename=os.path.join(values["DATA_DIR"], "queue.db"))
    huey.noop = huey.task(name="noop")(lambda: None)
    return huey


def __getattr__(name: str):
    # `huey_consumer bench.drain.noop_huey`: the no-op queue of the environment's settings.
    if name == "noop_huey":
        from config import settings as settings_module
        return _noop_huey_of(settings_module.load())
    raise AttributeError(name)


def procfile_worker_options() -> list[str]:
    """The worker options of the Procfile's `worker:` line (after the huey instance)."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("worker:"):
            words = shlex.split(line.split(":", 1)[1])
            return words[words.index("peerline_root.huey") + 1:]
    raise SystemExit("no worker line in the Procfile")


def start_consumer(target: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "huey_consumer"), target,
                             *procfile_worker_options()],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=None if os.environ.get("BENCH_VERBOSE") else subprocess.DEVNULL)


def stop(consumer: subprocess.Popen) -> None:
    consumer.send_signal(signal.SIGINT)     # graceful: running tasks finish, atexit runs
    try:
        consumer.wait(timeout=60)
    except subprocess.TimeoutExpired:
        consumer.kill()
        consumer.wait()


class Reader:
    """Plain read-only queries beside the worker (no SQLAlchemy, so nothing is counted and
    no write lock is taken)."""

    def __init__(self, values: dict):
        url = values.get("DATABASE_URL") or ""
        if url.startswith("postgres"):
            import psycopg
            self.pg = psycopg.connect(url, autocommit=True)
        else:
            self.pg = None
            self.db = os.path.join(values["DATA_DIR"], "peerline.db")
            self.queue = os.path.join(values["DATA_DIR"], "queue.db")

    def one(self, sql: str, queue: bool = False) -> int:
        if self.pg is not None:
            return self.pg.execute(sql).fetchone()[0]
        with sqlite3.connect(self.queue if queue else self.db, timeout=30) as conn:
            return conn.execute(sql).fetchone()[0]

    def inbox(self) -> tuple[int, int]:
        """(rows claimed at least once, rows finished)."""
        return (self.one("SELECT count(*) FROM inbox WHERE status <> 'new'"),
                self.one("SELECT count(*) FROM inbox WHERE status IN ('done', 'parked')"))

    def noop_left(self) -> int:
        table = "huey_task" if self.pg is not None else "task"
        return self.one(f"SELECT count(*) FROM {table} WHERE queue = 'bench-noop'", queue=True)


def wait_until(done, deadline: float, consumer: subprocess.Popen, poll: float) -> tuple[float | None, float | None]:
    """(when work started, when it ended) by polling `done()` -> (started, finished)."""
    t0 = t1 = None
    while time.monotonic() < deadline:
        started, finished = done()
        now = time.monotonic()
        if started and t0 is None:
            t0 = now
        if finished:
            t1 = now
            break
        if consumer.poll() is not None:
            raise SystemExit(f"huey_consumer exited with {consumer.returncode}")
        time.sleep(poll)
    return t0, t1


def noop_rate(values: dict, env: dict, reader: Reader, n: int, deadline: float) -> float:
    from bench import drain     # the module the consumer imports: task names carry the module's name
    huey = drain._noop_huey_of(values)
    for _ in range(n):
        huey.enqueue(huey.noop.s())
    consumer = start_consumer("bench.drain.noop_huey", env)
    try:
        t0, t1 = wait_until(lambda: ((left := reader.noop_left()) < n, left == 0), deadline, consumer, 0.02)
    finally:
        stop(consumer)
    if t0 is None or t1 is None:
        raise SystemExit("the no-op tasks did not drain within the time cap")
    return n / max(t1 - t0, 1e-6)


def run(args, tmp: str, database_url: str) -> None:
    from config import settings as settings_module
    hooks = os.path.join(tmp, "hooks")
    os.makedirs(hooks)
    Path(hooks, "sitecustomize.py").write_text(SITECUSTOMIZE)
    commits_file = os.path.join(tmp, "commits.txt")
    env = {k: v for k, v in os.environ.items() if k not in settings_module.DEFAULTS}
    env.update({k: "" for k in settings_module.DEFAULTS})     # nothing from .env or the shell
    env.update(DATA_DIR=os.path.join(tmp, "var"), SECRET_KEY="bench", DATABASE_URL=database_url,
               PYTHONPATH=str(ROOT))
    os.environ.update(env)
    consumer_env = {**env, "PYTHONPATH": f"{hooks}{os.pathsep}{ROOT}", "PEERLINE_BENCH_COMMITS": commits_file}

    from cli import read_roster_csv
    import peerline_root
    values = settings_module.load()
    ctx = peerline_root.context(values)
    ctx.store.import_roster(read_roster_csv(ROOT / "config" / "sample_roster.csv")[0])
    reader = Reader(values)
    deadline = time.monotonic() + args.max_minutes * 60
    load_before = os.getloadavg()

    noop_n = args.noop_tasks or max(args.cases, 1000)
    noop_per_s = noop_rate(values, env, reader, noop_n, deadline)
    print(f"bare huey no-op tasks: {noop_n} drained at {noop_per_s:.0f} tasks/s", flush=True)

    for n in range(args.cases):
        inbox_id, _ = ctx.db.record_submission(source="web", source_key=f"web:bench-{n:05d}",
                                               payload={"answers": answers(n)})
        ctx.enqueue(inbox_id)
    print(f"{args.cases} routine submissions in the inbox and queued; starting huey_consumer "
          f"peerline_root.huey {' '.join(procfile_worker_options())}", flush=True)
    consumer = start_consumer("peerline_root.huey", consumer_env)
    last_note = [time.monotonic()]

    def progress():
        claimed, done = reader.inbox()
        if time.monotonic() - last_note[0] > 30:
            last_note[0] = time.monotonic()
            print(f"  done {done}/{args.cases}", flush=True)
        return claimed > 0, done >= args.cases

    try:
        t0, t1 = wait_until(progress, deadline, consumer, 0.2)
    finally:
        stop(consumer)
    _, done = reader.inbox()
    if t0 is None:
        raise SystemExit("the worker claimed nothing within the time cap")
    elapsed = (t1 or time.monotonic()) - t0
    commits, statements = (map(int, Path(commits_file).read_text().split()) if os.path.exists(commits_file)
                           else (None, None))
    cases_n = reader.one("SELECT count(*) FROM cases")
    distinct = reader.one("SELECT count(DISTINCT case_id) FROM cases")
    outbox_n = reader.one("SELECT count(*) FROM outbox")
    rate = done / max(elapsed, 1e-6)

    print()
    print(f"database                          {'PostgreSQL' if database_url else 'SQLite'} "
          f"(queue: huey on the same {'PostgreSQL' if database_url else 'SQLite storage, queue.db'})")
    print(f"cases done                        {done}/{args.cases}{'' if t1 else '  (stopped at the time cap)'}"
          f"; cases {cases_n}, distinct Case IDs {distinct}; outbox messages {outbox_n}")
    print(f"drain                             {rate:.1f} cases/s  ({elapsed:.1f} s)")
    print(f"bare huey no-op                   {noop_per_s:.0f} tasks/s")
    print(f"cases/s / no-op tasks/s           {rate / noop_per_s:.4f}")
    if commits is not None:
        print(f"committed transactions            {commits}  =  {commits / max(done, 1):.1f} per case "
              f"(worker process, SQLAlchemy commits, periodic jobs included)")
        print(f"SQL statements                    {statements}  =  {statements / max(done, 1):.1f} per case "
              f"(the same process, through SQLAlchemy)")
    print(f"load average before / after       {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
          f"({os.cpu_count()} cores)")
    if done < args.cases or cases_n != args.cases or distinct != cases_n:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--noop-tasks", type=int, default=0, help="default: max(cases, 1000)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--max-minutes", type=float, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peerline-drain-") as tmp:
        if args.database == "sqlite":
            run(args, tmp, "")
            return
        import psycopg
        name = f"peerline_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            run(args, tmp, PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
        finally:
            from integrations import database
            database.dispose_engines()
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
