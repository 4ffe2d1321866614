"""The purge in the service's own database (workflows/purge.py decides which cases): the
per-case, per-sink purge state, and removing a case's personal data from the inbox, the
ledger and the outbox.

On SQLite the engine runs with `PRAGMA secure_delete=ON`, so overwritten values are zeroed in
the file, and `reclaim()` checkpoints the write-ahead log (TRUNCATE), so the old pages leave
the -wal file too. On PostgreSQL old row versions stay on disk until VACUUM (README "What we
keep, and for how long").
"""
from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from workflows.records import LedgerRow, from_row

from .schema import inbox, messages, outbox, purges

#: What a purged inbox payload becomes.
PURGED_PAYLOAD = json.dumps({"purged": True})


class PurgeRepo:
    """Mixed into `Database`: needs its transactions (`_write`, `_read`) and `self.clock`."""

    # ---- state ----
    def purge_state(self, case_id: str) -> dict[str, dict]:
        """sink -> its row (detail decoded), for one case."""
        with self._read() as conn:
            rows = conn.execute(sa.select(purges).where(purges.c.case_id == case_id)).mappings().all()
        return {r["sink"]: {**r, "detail": json.loads(r["detail"] or "{}")} for r in rows}

    def purge_begin(self, case_id: str, sink: str, detail: dict | None = None,
                    now: datetime | None = None) -> bool:
        """Start a sink's purge for a case (no-op when already started). Returns whether new."""
        try:
            with self._write(may_conflict=True) as conn:
                conn.execute(purges.insert().values(
                    case_id=case_id, sink=sink, status="pending", removed=0, attempts=0, error="",
                    detail=json.dumps(detail or {}), started_at=now or self.clock.now()))
            return True
        except IntegrityError:
            return False

    def purge_record(self, case_id: str, sink: str, *, done: bool, removed: int = 0,
                     detail: dict | None = None, error: str = "", now: datetime | None = None) -> None:
        """One attempt at a sink: done (with what was removed) or still pending (with why)."""
        values = {"attempts": purges.c.attempts + 1, "error": error[:200]}
        if done:
            values.update(status="done", removed=removed, done_at=now or self.clock.now())
        if detail is not None:
            values["detail"] = json.dumps(detail)
        with self._write() as conn:
            conn.execute(purges.update().where(purges.c.case_id == case_id)
                         .where(purges.c.sink == sink).values(**values))

    def purges_pending(self) -> list[str]:
        """Cases with a sink still pending."""
        with self._read() as conn:
            return [r[0] for r in conn.execute(sa.select(purges.c.case_id).distinct()
                                               .where(purges.c.status == "pending"))]

    # ---- the personal data in our own tables ----
    def purge_case_rows(self, case_id: str) -> dict[str, int]:
        """Remove a case's personal data from the inbox (payload replaced by a marker, errors
        cleared), the ledger (recipients, placeholder values, errors) and the outbox (recipient,
        subject, text). Ids, kinds, states and times stay. Returns rows changed per table;
        running it again changes nothing more."""
        with self._write() as conn:
            n_inbox = conn.execute(inbox.update().where(inbox.c.case_id == case_id)
                                   .where(inbox.c.payload != PURGED_PAYLOAD)
                                   .values(payload=PURGED_PAYLOAD, last_error="")).rowcount
            n_ledger = conn.execute(messages.update().where(messages.c.case_id == case_id)
                                    .where(sa.or_(messages.c.recipient != "", messages.c.values_json != "{}",
                                                  messages.c.error != ""))
                                    .values(recipient="", values_json="{}", error="")).rowcount
            # A message not yet handed over never goes now (it has no address left).
            conn.execute(messages.update().where(messages.c.case_id == case_id)
                         .where(messages.c.status.in_(("pending", "held", "retry")))
                         .values(status="failed", error="case purged", alerted=True, next_attempt_at=None))
            n_outbox = conn.execute(outbox.update().where(outbox.c.case_id == case_id)
                                    .where(sa.or_(outbox.c.recipient != "", outbox.c.subject != "",
                                                  outbox.c.body != ""))
                                    .values(recipient="", subject="", body="")).rowcount
        return {"inbox": n_inbox, "ledger": n_ledger, "outbox": n_outbox}

    def case_messages(self, case_id: str) -> list[LedgerRow]:
        """The ledger rows of a case (the purge reads channel, status, recipient, provider id)."""
        with self._read() as conn:
            return [from_row(LedgerRow, r)
                    for r in conn.execute(sa.select(messages).where(messages.c.case_id == case_id)).mappings()]

    def addresses_in_use(self, case_ids: list[str]) -> set[str]:
        """Email addresses the ledger holds for these (open) cases."""
        if not case_ids:
            return set()
        with self._read() as conn:
            return {r[0].lower() for r in conn.execute(
                sa.select(messages.c.recipient).where(messages.c.case_id.in_(case_ids))
                .where(messages.c.channel == "email")) if r[0]}

    def reclaim(self) -> None:
        """After a purge: SQLite moves the write-ahead log's pages into the (zeroing) main file
        and truncates the log. PostgreSQL: nothing here (VACUUM is the operator's, README)."""
        if self.engine.dialect.name != "sqlite":
            return
        raw = self.engine.raw_connection()      # outside a transaction: a checkpoint needs that
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            raw.close()
