"""Settings: the only code that reads the environment.

Order: embedded defaults, then `.env` (python-dotenv, never overriding a real environment
variable), then the process environment, then the overrides a caller passes (tests).
Every key is listed in README.md and `.env.example`.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from dotenv import load_dotenv

from config.vocabulary import is_true

ROOT = Path(__file__).resolve().parent.parent

#: Every setting with its embedded default (None: unset). docs/architecture.md section 5, plus the
#: operational knobs below the blank line.
DEFAULTS: dict[str, object] = {
    "SECRET_KEY": None,
    "PUBLIC_BASE_URL": None,   # default: http://localhost:<PORT>
    "DATA_DIR": "./var",
    "DATABASE_URL": None,
    "REDIS_URL": None,
    "AIRTABLE_API_KEY": None,
    "AIRTABLE_BASE_ID": None,
    "AIRTABLE_API_URL": "https://api.airtable.com",
    "AIRTABLE_WEBHOOK_SECRET": None,
    "QUALTRICS_API_URL": None,
    "QUALTRICS_API_TOKEN": None,
    "QUALTRICS_WEBHOOK_TOKEN": None,
    "QUALTRICS_SHARED_KEY": None,
    "REDCAP_API_URL": None,
    "REDCAP_API_TOKEN": None,
    "REDCAP_PROJECT_ID": None,
    "REDCAP_WEBHOOK_TOKEN": None,
    "TWILIO_ACCOUNT_SID": None,
    "TWILIO_AUTH_TOKEN": None,
    "TWILIO_MESSAGING_SERVICE_SID": None,
    "TWILIO_API_URL": "https://api.twilio.com",
    # Twilio's message retention options, sent with each message only when set (accounts with
    # Twilio's privacy settings): discard|retain, and obfuscate|retain.
    "TWILIO_CONTENT_RETENTION": None,
    "TWILIO_ADDRESS_RETENTION": None,
    "SENDGRID_API_KEY": None,
    "SENDGRID_FROM_EMAIL": None,
    "SENDGRID_API_URL": "https://api.sendgrid.com",
    "SENDGRID_WEBHOOK_PUBLIC_KEY": None,
    "QUALTRICS_SURVEY_URL": None,   # the survey's public link, for flyers (flask flyers make --form qualtrics)
    "REDCAP_SURVEY_URL": None,      # the public survey link, for flyers (flask flyers make --form redcap)
    "METRICS_TOKEN": None,
    "PROGRAM_FILE": "config/program.toml",
    "PORT": "5000",

    # Operational knobs (not in docs/architecture.md section 5; documented in the README).
    # Posts of the built-in form, counted once for all processes (Redis, else the database):
    # per browser session (strict), and per client address (loose: a hospital's staff share
    # one NAT address). See web/ratelimit.py.
    "REQUEST_RATE_LIMIT": "5 per minute;30 per hour",
    "REQUEST_RATE_LIMIT_PER_ADDRESS": "30 per minute;300 per hour",
    "RATELIMIT_ENABLED": "true",
    "MAX_CONTENT_LENGTH": str(256 * 1024),
    "RETRY_MAX_ATTEMPTS": "8",
    "RETRY_BASE_SECONDS": "30",
    "INBOX_LEASE_SECONDS": "300",
    "OUTSIDE_TIMEOUT_SECONDS": "10",
    "PROXY_COUNT": "0",
    # Fail fast (issue 15): how long the web process waits for the database before answering
    # 503 with Retry-After; the worker may wait longer. /metrics: its bearer token.
    "DATABASE_WAIT_SECONDS": "5",
    "WORKER_DATABASE_WAIT_SECONDS": "30",
}

#: Settings that hold secrets: never printed, never logged.
SECRET_KEYS = {
    "SECRET_KEY", "AIRTABLE_API_KEY", "AIRTABLE_WEBHOOK_SECRET", "QUALTRICS_API_TOKEN",
    "QUALTRICS_WEBHOOK_TOKEN", "QUALTRICS_SHARED_KEY", "REDCAP_API_TOKEN", "REDCAP_WEBHOOK_TOKEN",
    "TWILIO_AUTH_TOKEN", "SENDGRID_API_KEY", "METRICS_TOKEN",
}

#: A backend is configured when its trigger key is set; it then needs every key listed.
BACKEND_REQUIREMENTS = {
    "Airtable case store": (("AIRTABLE_API_KEY", "AIRTABLE_BASE_ID"), ("AIRTABLE_API_KEY", "AIRTABLE_BASE_ID")),
    "Twilio SMS": (("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"),
                   ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_MESSAGING_SERVICE_SID", "PUBLIC_BASE_URL")),
    "SendGrid email": (("SENDGRID_API_KEY",), ("SENDGRID_API_KEY", "SENDGRID_FROM_EMAIL")),
    "Qualtrics form": (("QUALTRICS_API_TOKEN", "QUALTRICS_WEBHOOK_TOKEN"),
                       ("QUALTRICS_API_URL", "QUALTRICS_API_TOKEN", "QUALTRICS_WEBHOOK_TOKEN")),
    "REDCap form": (("REDCAP_API_TOKEN", "REDCAP_WEBHOOK_TOKEN"),
                    ("REDCAP_API_URL", "REDCAP_API_TOKEN", "REDCAP_PROJECT_ID", "REDCAP_WEBHOOK_TOKEN")),
}


class SettingsError(RuntimeError):
    """A setting is missing or wrong; the message says which and what to do."""


def load(overrides: dict | None = None) -> dict:
    """Return the settings as a dict of strings (None when unset)."""
    load_dotenv(ROOT / ".env", override=False)
    values: dict = {}
    for key, default in DEFAULTS.items():
        raw = os.environ.get(key)
        values[key] = raw if raw not in (None, "") else default
    values.update(overrides or {})
    values["DATA_DIR"] = str(_resolve(values["DATA_DIR"]))
    values["PROGRAM_FILE"] = str(_resolve(values["PROGRAM_FILE"]))
    values["PUBLIC_BASE_URL"] = public_base_url(values)
    check(values)
    if not values.get("SECRET_KEY"):
        values["SECRET_KEY"] = _embedded_secret_key(Path(values["DATA_DIR"]))
    return values


#: Where the web server records the address it listens on (config/gunicorn.conf.py), in DATA_DIR.
SERVED_URL_FILE = "served_url"


def public_base_url(values: dict) -> str:
    """The address in links and webhook URLs, the same in the web, worker and CLI processes:
    PUBLIC_BASE_URL when set; else the address the local web server recorded when it started
    (`make run PORT=5055` serves on 5055, and the worker and a CLI in another shell must say
    so too, though their own PORT differs); else http://localhost:<PORT>."""
    if values.get("PUBLIC_BASE_URL"):
        return str(values["PUBLIC_BASE_URL"]).rstrip("/")
    recorded = Path(values["DATA_DIR"]) / SERVED_URL_FILE
    try:
        served = recorded.read_text().strip()
    except OSError:
        served = ""
    return (served or f"http://localhost:{values['PORT']}").rstrip("/")


def record_served_url(values: dict, port: int | str) -> None:
    """Called by the web server when it starts listening, when PUBLIC_BASE_URL is unset."""
    data_dir = Path(values["DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f"{SERVED_URL_FILE}.{os.getpid()}"
    tmp.write_text(f"http://localhost:{port}\n")
    os.replace(tmp, data_dir / SERVED_URL_FILE)


def check(values: dict) -> None:
    """Stop the start when a configured backend lacks a key it needs."""
    missing = []
    for backend, (triggers, needed) in BACKEND_REQUIREMENTS.items():
        if any(values.get(k) for k in triggers):
            lacking = [k for k in needed if not values.get(k)]
            if lacking:
                missing.append(f"{backend} needs {', '.join(lacking)}")
    if values.get("DATABASE_URL") and not values.get("SECRET_KEY"):
        missing.append("a shared database (DATABASE_URL) needs SECRET_KEY, the same on every process")
    if missing:
        raise SettingsError("Missing settings: " + "; ".join(missing)
                            + ". Set them in the environment or in .env (see .env.example).")


def database_url(values: dict) -> str:
    """The service's own SQL database: DATABASE_URL, else SQLite in DATA_DIR."""
    url = values.get("DATABASE_URL")
    if not url:
        return f"sqlite:///{Path(values['DATA_DIR']) / 'peerline.db'}"
    # Platforms hand out postgres:// URLs; SQLAlchemy wants the driver named.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def flag(values: dict, key: str) -> bool:
    return is_true(values.get(key))


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else (ROOT / p)


def _embedded_secret_key(data_dir: Path) -> str:
    """On one machine with no SECRET_KEY, keep a random one in DATA_DIR so that the web
    and worker processes agree and restarts keep signed links valid."""
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "secret_key"
    if not key_file.exists():
        tmp = key_file.with_suffix(f".{os.getpid()}")
        tmp.write_text(secrets.token_urlsafe(48))
        os.chmod(tmp, 0o600)
        os.replace(tmp, key_file) if not key_file.exists() else tmp.unlink()
    return key_file.read_text().strip()
