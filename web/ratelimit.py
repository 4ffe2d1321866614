"""The form's rate limit, counted once for the whole deployment: Flask-Limiter's setup and
its keys. `init_app(app)` runs first in `web.register_pages`, so every page's limiter (the
form's, the console's) uses the shared store it configures.

Every web process (gunicorn workers, machines) shares one count, so a limit means the same
thing however many processes run:

- `REDIS_URL` set: Flask-Limiter's own Redis storage;
- otherwise the service's own database (SQLite in DATA_DIR, or PostgreSQL with DATABASE_URL),
  through `SqlStorage` below (the `limits` library has no SQL storage).

Two limits apply to `POST /request` (see README, Configuration):

- `REQUEST_RATE_LIMIT`, per browser: keyed by the browser's session (Flask's signed session
  cookie, which the form's CSRF token sets on `GET /request`), so colleagues behind one
  hospital address never use up each other's allowance. A post without a session (it fails
  the CSRF check anyway) is counted per address under this strict limit.
- `REQUEST_RATE_LIMIT_PER_ADDRESS`, per client address, loose: hundreds of staff share a
  hospital's NAT address, so it only stops a script that fetches fresh sessions.

Keys are HMAC digests (with SECRET_KEY) of the session token or the address: the store holds
no address and no CSRF token. A counter store that fails lets the request through (logged):
a broken counter must never turn away a person asking for help.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import threading
from datetime import datetime
from typing import Callable

import limits
import sqlalchemy as sa
from flask import current_app, request, session
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits.storage import Storage
from sqlalchemy.dialects import postgresql, sqlite

from config import settings as settings_module
from integrations import database
from workflows.clock import Clock

SCHEME = "peerline+sql"

_metadata = sa.MetaData()
#: One row per limit window: the Flask-Limiter key (digests only), its count, and when the
#: window ends (seconds since the epoch, from the service's clock).
rate_limits = sa.Table(
    "rate_limits", _metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)

#: The INSERT constructs that know ON CONFLICT DO UPDATE (same API on both engines).
_UPSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}

#: Statements built once: each form post counts four windows, and building a statement cost
#: more than running it (bench/intake.py, POST /request).
_B = sa.bindparam
_CLEAR_ENDED = rate_limits.delete().where(rate_limits.c.expires_at <= _B("now", type_=sa.Float))
_COUNT = sa.select(rate_limits.c.count).where(rate_limits.c.key == _B("key"),
                                              rate_limits.c.expires_at > _B("now", type_=sa.Float))
_EXPIRES = sa.select(rate_limits.c.expires_at).where(rate_limits.c.key == _B("key"),
                                                     rate_limits.c.expires_at > _B("now", type_=sa.Float))


@functools.cache
def _incr_statement(dialect: str):
    """INSERT ... ON CONFLICT DO UPDATE ... RETURNING count: a window's count, restarted once
    the window has ended."""
    amount, until = _B("amount", type_=sa.Integer), _B("until", type_=sa.Float)
    expired = rate_limits.c.expires_at <= _B("now", type_=sa.Float)
    return _UPSERT[dialect](rate_limits).values(
        key=_B("key"), count=amount, expires_at=until,
    ).on_conflict_do_update(
        index_elements=[rate_limits.c.key],
        set_={"count": sa.case((expired, amount), else_=rate_limits.c.count + amount),
              "expires_at": sa.case((expired, until), else_=rate_limits.c.expires_at)},
    ).returning(rate_limits.c.count)


_created: set[str] = set()
_created_lock = threading.Lock()


class SqlStorage(Storage):
    """Fixed-window counters in the service's own SQL database (SQLAlchemy Core).

    `incr` is one atomic statement (INSERT ... ON CONFLICT DO UPDATE ... RETURNING), so any
    number of processes can count the same key. Options: `database_url` (SQLAlchemy URL of
    the service's database) and `clock` (returns an aware datetime; the service's clock).
    """

    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, *,
                 database_url: str | None = None, clock: Callable[[], datetime] | None = None,
                 **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        if not database_url:
            raise limits.errors.ConfigurationError(f"{SCHEME}:// needs the database_url option")
        # The service database's engine (one pool per URL per process). This SQL storage may
        # move into the database package later; it is here because only the pages use it.
        self.engine = database.engine_for(database_url)
        self.clock = clock or Clock().now
        with _created_lock:
            if database_url not in _created:
                _metadata.create_all(self.engine)   # checkfirst: safe in every process
                _created.add(database_url)

    @property
    def base_exceptions(self):
        return sa.exc.SQLAlchemyError

    def _now(self) -> float:
        return self.clock().timestamp()

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = self._now()
        params = {"key": key, "amount": amount, "now": now, "until": now + expiry}
        # A count lost in a power cut harms nothing: the commit does not wait for the disk
        # (a post of the form waits for one fsync, its own submission's, not one per window).
        with database.transaction(self.engine, durable=False) as conn:
            count = conn.execute(_incr_statement(self.engine.dialect.name), params).scalar_one()
            if count == amount:   # a window began: clear the ones that ended (keeps the table small)
                conn.execute(_CLEAR_ENDED, params)
        return int(count)

    def get(self, key: str) -> int:
        with self.engine.connect() as conn:
            count = conn.execute(_COUNT, {"key": key, "now": self._now()}).scalar()
        return int(count or 0)

    def get_expiry(self, key: str) -> float:
        now = self._now()
        with self.engine.connect() as conn:
            expires = conn.execute(_EXPIRES, {"key": key, "now": now}).scalar()
        return float(expires or now)

    def check(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def reset(self) -> int | None:
        with self.engine.begin() as conn:
            return conn.execute(rate_limits.delete()).rowcount

    def clear(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(rate_limits.delete().where(rate_limits.c.key == key))


def storage_config(values: dict, clock: Callable[[], datetime]) -> dict:
    """Flask-Limiter settings for this deployment's shared counter store."""
    if values.get("REDIS_URL"):
        return {"RATELIMIT_STORAGE_URI": values["REDIS_URL"], "RATELIMIT_STORAGE_OPTIONS": {}}
    return {"RATELIMIT_STORAGE_URI": f"{SCHEME}://",
            "RATELIMIT_STORAGE_OPTIONS": {"database_url": settings_module.database_url(values),
                                          "clock": clock}}


def check_limit_settings(values: dict, keys=("REQUEST_RATE_LIMIT", "REQUEST_RATE_LIMIT_PER_ADDRESS")) -> None:
    """A limit that cannot be read stops the start, naming the setting."""
    for key in keys:
        try:
            limits.parse_many(str(values.get(key) or ""))
        except ValueError as exc:
            raise settings_module.SettingsError(
                f"{key} must read like '5 per minute;30 per hour' ({exc})") from None


def _digest(value: str) -> str:
    secret = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:32]


def browser_key() -> str:
    """The browser's session (its CSRF token, set by GET /request), or its address without one."""
    token = session.get("csrf_token")
    if token:
        return "browser:" + _digest(str(token))
    return "no-session:" + _digest(get_remote_address())


def address_key() -> str:
    return "address:" + _digest(get_remote_address())


def only_for_blueprints(limiter: Limiter, *blueprints: str) -> None:
    """Let `limiter` look at requests of `blueprints` only. Flask-Limiter hooks every request of
    the app; on the others (a form system's webhook, say) it would do work for no limit at all.
    This filter keeps it out of their limits; `hooks_on_blueprints` keeps its hooks off them."""
    names = frozenset(blueprints)
    limiter.request_filter(lambda: request.blueprint not in names)


def hooks_on_blueprints(app, limiter: Limiter, *blueprints: str) -> None:
    """Move the request hooks `limiter.init_app(app)` put on every request of `app` to the
    scopes of `blueprints` (Flask runs a blueprint's hooks on its own requests only). Even with
    `only_for_blueprints`, those hooks cost a webhook a tenth of its CPU time
    (bench/intake.py). Call it once per limiter, with all its blueprints, before registering
    them (the limiter's check then runs ahead of a blueprint's own hooks, as it did app-wide). A
    Flask-Limiter that registers its hooks some other way leaves them where they are: the filter
    still keeps the limits right."""
    for hooks in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs):
        everywhere = hooks.get(None, [])
        for hook in [h for h in everywhere if _belongs_to(h, limiter)]:
            everywhere.remove(hook)
            for name in blueprints:
                hooks.setdefault(name, []).append(hook)


def _belongs_to(hook, limiter: Limiter) -> bool:
    """A method of `limiter`, or a partial of one of its functions given `limiter` first."""
    if getattr(hook, "__self__", None) is limiter:
        return True
    return isinstance(hook, functools.partial) and bool(hook.args) and hook.args[0] is limiter


def init_app(app) -> Limiter:
    """A Limiter for this app (never shared between apps), on the deployment's shared store."""
    values = app.config
    check_limit_settings(values)
    ctx = app.extensions["peerline"]
    app.config.update(storage_config(values, clock=lambda: ctx.now()))
    app.config["RATELIMIT_SWALLOW_ERRORS"] = True
    limiter = Limiter(browser_key, default_limits=[], headers_enabled=True)
    limiter.init_app(app)
    app.extensions["peerline_limiter"] = limiter
    return limiter
