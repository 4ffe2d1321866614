"""gunicorn settings for the Procfile's web process: `gunicorn -c config/gunicorn.conf.py 'app:create_app()'`.

Kept here rather than on the Procfile line so that the line survives being copied into a
systemd unit or a platform's dashboard. Override any of it with GUNICORN_CMD_ARGS
(e.g. `--bind 127.0.0.1:8000` behind a reverse proxy on the same host).

When PUBLIC_BASE_URL is unset (one machine, `make run PORT=...`), the server records the port it
really listens on in DATA_DIR, so the worker and the CLI build supporter links to the same
address (config.settings.public_base_url).
"""
import os

from config import settings as settings_module

bind = f"0.0.0.0:{os.environ.get('PORT') or 5000}"
workers = 2
# Threads, so that a worker goes on answering while a request waits for the disk (a submission's
# 2xx waits for its commit's fsync), and submissions waiting together share one commit
# (integrations/database/group_commit.py). The code is thread-safe: the huey worker runs it on
# four threads too. 8 stays within each process's database pool (5 + overflow).
worker_class = "gthread"
threads = 8
# Access log: client, method, path (never the query string: webhook tokens travel there),
# status, seconds. The logger class masks the token of a supporter's /s/ link.
logger_class = "web.supporter.AccessLogger"
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(L)ss'


def when_ready(server):
    values = settings_module.load()          # reads .env too
    if not os.environ.get("PUBLIC_BASE_URL") and server.LISTENERS:
        host, port = server.LISTENERS[0].getsockname()[:2]
        settings_module.record_served_url(values, port)
