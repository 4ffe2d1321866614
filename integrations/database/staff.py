"""Staff accounts, their server-side sessions, and the growing delay after failed sign-ins:
the console's sign-in (web/console.py, `flask staff`)."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from workflows.records import StaffAccount, from_row

from .schema import staff, staff_login_failures, staff_sessions


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class StaffStore:
    """Staff accounts, sessions and sign-in delays in the service's own database."""

    def __init__(self, db):
        self.engine = db.engine

    # ---- accounts ----
    def add(self, *, email: str, name: str, role: str, institutions: list[str], password_hash: str,
            now: datetime) -> StaffAccount:
        """A new account. Raises ValueError when the email already has one."""
        try:
            with self.engine.begin() as conn:
                conn.execute(staff.insert().values(
                    email=email.strip().lower(), name=name, role=role, institutions=" ".join(institutions),
                    password_hash=password_hash, disabled=False, created_at=now))
        except IntegrityError:
            raise ValueError(f"an account with the email {email.strip().lower()} already exists") from None
        return self.by_email(email)

    def get(self, staff_id: int) -> StaffAccount | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(staff).where(staff.c.id == staff_id)).mappings().first()
        return from_row(StaffAccount, row) if row else None

    def by_email(self, email: str) -> StaffAccount | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(staff).where(staff.c.email == email.strip().lower())).mappings().first()
        return from_row(StaffAccount, row) if row else None

    def all(self) -> list[StaffAccount]:
        with self.engine.connect() as conn:
            return [from_row(StaffAccount, r)
                    for r in conn.execute(sa.select(staff).order_by(staff.c.email)).mappings()]

    def disable(self, email: str) -> bool:
        """Disable an account and end its sessions. False when there is no such account."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(staff.c.id).where(staff.c.email == email.strip().lower())).first()
            if row is None:
                return False
            conn.execute(staff.update().where(staff.c.id == row[0]).values(disabled=True))
            conn.execute(staff_sessions.delete().where(staff_sessions.c.staff_id == row[0]))
        return True

    # ---- sessions ----
    def start_session(self, staff_id: int, now: datetime) -> str:
        """A new session for a signed-in account; returns the token for the (signed) cookie."""
        token = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(staff_sessions.insert().values(token_hash=_sha256(token), staff_id=staff_id,
                                                        created_at=now, last_seen=now))
        return token

    def session_account(self, token: str, now: datetime, idle: timedelta) -> StaffAccount | None:
        """The account of a live session, which counts as activity; None (and the session
        ended) when it was idle longer than `idle`, or the account is disabled."""
        digest = _sha256(token)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(staff_sessions).where(staff_sessions.c.token_hash == digest)).mappings().first()
            if row is None:
                return None
            account = conn.execute(sa.select(staff).where(staff.c.id == row["staff_id"])).mappings().first()
            if account is None or account["disabled"] or row["last_seen"] + idle < now:
                conn.execute(staff_sessions.delete().where(staff_sessions.c.token_hash == digest))
                return None
            conn.execute(staff_sessions.update().where(staff_sessions.c.token_hash == digest).values(last_seen=now))
        return from_row(StaffAccount, account)

    def end_session(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(staff_sessions.delete().where(staff_sessions.c.token_hash == _sha256(token)))

    # ---- sign-in delays ----
    def blocked_until(self, email: str, now: datetime) -> datetime | None:
        with self.engine.connect() as conn:
            until = conn.execute(sa.select(staff_login_failures.c.blocked_until)
                                 .where(staff_login_failures.c.email_hash == _sha256(email.strip().lower()))).scalar()
        return until if until is not None and until > now else None

    def record_failure(self, email: str, now: datetime, *, cap: timedelta,
                       forget_after: timedelta = timedelta(hours=24)) -> datetime:
        """One more failed sign-in: the address waits 2^n seconds after n failures (at most
        `cap`); failures older than `forget_after` are forgotten. Returns until when."""
        digest = _sha256(email.strip().lower())
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(staff_login_failures)
                               .where(staff_login_failures.c.email_hash == digest)).mappings().first()
            failures = 1
            if row is not None and row["last_failure_at"] and row["last_failure_at"] + forget_after > now:
                failures = row["failures"] + 1
            until = now + min(timedelta(seconds=2 ** min(failures, 20)), cap)
            values = dict(failures=failures, blocked_until=until, last_failure_at=now)
            if row is None:
                conn.execute(staff_login_failures.insert().values(email_hash=digest, **values))
            else:
                conn.execute(staff_login_failures.update()
                             .where(staff_login_failures.c.email_hash == digest).values(**values))
        return until

    def clear_failures(self, email: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(staff_login_failures.delete()
                         .where(staff_login_failures.c.email_hash == _sha256(email.strip().lower())))
