"""The message ledger (one row per message: intent, claim, delivery), the opt-outs, provider
webhook dedupe, and the outbox (the embedded SMS and email provider).

The ledger is what makes a message one send (docs/architecture.md section 1); it never holds the
text, only the template's name and its placeholder values.
"""
from __future__ import annotations

import functools
import json
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from workflows.model import MessageRecord
from workflows.records import LedgerRow, OutboxMessage, from_row

from .schema import messages, opt_outs, outbox, webhook_events

#: "Insert unless the key is there" in one statement (no error, so no savepoint in a unit).
_INSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}

# The statements of a message's way out, built once and run with parameters: building a
# statement costs several times what running it costs on SQLite, and a routine case runs each
# of these six times (issue 14).
_B = sa.bindparam
_GET = sa.select(messages).where(messages.c.key == _B("key_"))
_OPTED_OUT = (sa.select(opt_outs.c.address).where(opt_outs.c.channel == _B("channel_"))
              .where(opt_outs.c.address == _B("address_")))
_OPTED_OUT_AMONG = (sa.select(opt_outs.c.address).where(opt_outs.c.channel == _B("channel_"))
                    .where(opt_outs.c.address.in_(_B("addresses_", expanding=True))))
_CLAIM = (messages.update().where(messages.c.key == _B("key_"))
          .where(sa.or_(
              sa.and_(messages.c.status.in_(("pending", "held", "retry")),
                      sa.or_(messages.c.next_attempt_at.is_(None), messages.c.next_attempt_at <= _B("now_"))),
              sa.and_(messages.c.status == "sending",
                      sa.or_(messages.c.claimed_until.is_(None), messages.c.claimed_until < _B("now_")))))
          .values(status="sending", claimed_until=_B("until_"), attempts=messages.c.attempts + 1,
                  body_digest=sa.func.coalesce(_B("digest_", type_=sa.String), messages.c.body_digest))
          .returning(*messages.c))


#: A message this same transaction recorded, sent at once to a sender that is a table of this
#: database (the outbox): see `ledger_sent_now`.
_SENT_NOW = (messages.update().where(messages.c.key == _B("key_"))
             .where(messages.c.status == "pending").where(messages.c.attempts == 0)
             .values(status="sent", attempts=1, body_digest=_B("digest_"), provider_id=_B("provider_id_"),
                     sent_at=_B("now_"), error="", claimed_until=None, next_attempt_at=None))


@functools.cache
def _insert_new(dialect: str, table: sa.Table, key: str, returning: tuple = ()):
    stmt = _INSERT[dialect](table).on_conflict_do_nothing(index_elements=[key])
    return stmt.returning(*returning) if returning else stmt


@functools.cache
def _advance(allowed: tuple[str, ...], names: tuple[str, ...]):
    return (messages.update().where(messages.c.key == _B("key_")).where(messages.c.status.in_(allowed))
            .values(status=_B("status_"), **{name: _B(f"{name}_") for name in names}))


class LedgerRepo:
    """Mixed into `Database`: needs its transactions (`_write`, `_read`) and `self.clock`."""

    # ---- message ledger ----
    def ledger_get(self, key: str) -> LedgerRow | None:
        with self._read() as conn:
            row = conn.execute(_GET, {"key_": key}).mappings().first()
        return from_row(LedgerRow, row) if row else None

    def ledger_intend(self, record: MessageRecord, recipient: str, *, template: str = "",
                      values: dict | None = None, crisis: bool = False, now: datetime | None = None
                      ) -> LedgerRow | None:
        """Record the intent to send before any provider call (no-op when already there).
        Returns the row when this call recorded it (so the sender need not read it again),
        None when it was already there."""
        return self.ledger_intend_all([dict(record=record, recipient=recipient, template=template, values=values,
                                            crisis=crisis)], now=now).get(record.key)

    def ledger_intend_all(self, intents: list[dict], now: datetime | None = None) -> dict[str, LedgerRow]:
        """`ledger_intend` for several messages in one statement: each of `intents` holds its
        arguments (record, recipient, template, values, crisis). Returns the rows this call
        recorded, by key (a key already there is left as it is, and not returned)."""
        now = now or self.clock.now()
        rows = [dict(
            key=i["record"].key, case_id=i["record"].case_id, kind=i["record"].kind, channel=i["record"].channel,
            recipient_role=i["record"].recipient_role, recipient=i["recipient"], status="pending",
            provider_id="", error="", created_at=now, template=i.get("template", ""),
            values_json=json.dumps(i.get("values") or {}, ensure_ascii=False, default=str),
            crisis=bool(i.get("crisis")), attempts=0, body_digest="", alerted=False, mirror_due=False)
            for i in intents]
        if not rows:
            return {}
        with self._write() as conn:
            new = conn.execute(_insert_new(self.engine.dialect.name, messages, "key", tuple(messages.c)),
                               rows).mappings().all()
        return {row["key"]: from_row(LedgerRow, row) for row in new}

    def ledger_claim(self, key: str, claim_seconds: int = 120, now: datetime | None = None,
                     body_digest: str | None = None) -> LedgerRow | None:
        """Only one worker may send a message; a crashed sender's claim runs out. Held and
        retrying messages can be claimed once they are due. Counts the attempt, records the
        text's `body_digest` with it, and returns the row as claimed (None: not claimed)."""
        now = now or self.clock.now()
        params = {"key_": key, "now_": now, "until_": now + timedelta(seconds=claim_seconds),
                  "digest_": body_digest}
        # On disk before the provider is called: after a power cut the counted attempt and the
        # digest let the rerun ask the provider first (inside a unit of work the send is a row
        # of this database, committed with the rest or not at all).
        with self._write(durable=True) as conn:
            row = conn.execute(_CLAIM, params).mappings().first()
        return from_row(LedgerRow, row) if row else None

    def ledger_sent_now(self, sent: list[tuple[str, str, str]], now: datetime) -> None:
        """Rows recorded by this same transaction, given to a sender whose messages are rows
        of this database in it too (the outbox), marked sent in one statement: [(key,
        provider id, text digest)]. The row ends as `ledger_claim` then `ledger_advance` to
        "sent" would leave it (one attempt, the digest, no claim left). No claim is needed:
        until the commit no other transaction sees the row, and the commit records the send
        and its row together or neither. Only inside a unit of work; raises (undoing the
        unit) if a row is not a fresh intent."""
        if self._unit() is None:
            raise RuntimeError("ledger_sent_now outside a unit of work")
        if not sent:
            return
        params = [{"key_": key, "provider_id_": provider_id, "digest_": digest, "now_": now}
                  for key, provider_id, digest in sent]
        with self._write() as conn:
            moved = conn.execute(_SENT_NOW, params).rowcount
        if moved != len(sent):
            raise RuntimeError(f"{len(sent) - moved} of {len(sent)} messages were not fresh intents")

    def ledger_hold(self, key: str, until: datetime) -> bool:
        """Keep an unsent message until `until` (quiet hours)."""
        stmt = (messages.update().where(messages.c.key == key)
                .where(messages.c.status.in_(("pending", "retry", "held")))
                .values(status="held", next_attempt_at=until, claimed_until=None))
        with self._write() as conn:
            return conn.execute(stmt).rowcount == 1

    def ledger_advance(self, key: str, status: str, allowed_from, **values) -> bool:
        """Move a message to `status` only from one of `allowed_from` (so a late or repeated
        delivery report never moves it backwards). Returns whether it moved."""
        stmt = _advance(tuple(allowed_from), tuple(sorted(values)))
        params = {"key_": key, "status_": status, **{f"{name}_": value for name, value in values.items()}}
        with self._write() as conn:
            return conn.execute(stmt, params).rowcount == 1

    def ledger_due(self, now: datetime, *, stale_seconds: int = 60, limit: int = 500) -> list[str]:
        """Messages the periodic task must (re)try: held or retrying ones that are due, intents
        never claimed (a worker died between intent and claim), and claims that ran out."""
        stmt = sa.select(messages.c.key).where(sa.or_(
            sa.and_(messages.c.status.in_(("held", "retry")), messages.c.next_attempt_at <= now),
            sa.and_(messages.c.status == "pending", messages.c.created_at < now - timedelta(seconds=stale_seconds)),
            sa.and_(messages.c.status == "sending",
                    sa.or_(messages.c.claimed_until.is_(None), messages.c.claimed_until < now)),
        )).order_by(messages.c.crisis.desc(), messages.c.created_at).limit(limit)
        with self._read() as conn:
            return [r[0] for r in conn.execute(stmt)]

    def ledger_by_provider_id(self, provider_id: str) -> LedgerRow | None:
        if not provider_id:
            return None
        with self._read() as conn:
            row = conn.execute(sa.select(messages).where(messages.c.provider_id == provider_id)).mappings().first()
        return from_row(LedgerRow, row) if row else None

    def ledger_not_alerted(self, statuses, limit: int = 200) -> list[LedgerRow]:
        """Messages that ended in one of `statuses` and whose failure nobody was told of yet."""
        stmt = (sa.select(messages).where(messages.c.status.in_(tuple(statuses)))
                .where(messages.c.alerted == sa.false()).order_by(messages.c.created_at).limit(limit))
        with self._read() as conn:
            return [from_row(LedgerRow, r) for r in conn.execute(stmt).mappings()]

    def ledger_mirror_due(self, limit: int = 200) -> list[str]:
        stmt = sa.select(messages.c.key).where(messages.c.mirror_due == sa.true()).limit(limit)
        with self._read() as conn:
            return [r[0] for r in conn.execute(stmt)]

    # ---- opt-outs ----
    def opt_out(self, channel: str, address: str, source: str, now: datetime | None = None) -> bool:
        """Record that `address` asked to stop on `channel`. Returns whether it is new."""
        try:
            with self._write(may_conflict=True) as conn:
                conn.execute(opt_outs.insert().values(channel=channel, address=address, source=source,
                                                      at=now or self.clock.now()))
            return True
        except IntegrityError:
            return False

    def opt_in(self, channel: str, address: str) -> bool:
        with self._write() as conn:
            return conn.execute(opt_outs.delete().where(opt_outs.c.channel == channel)
                                .where(opt_outs.c.address == address)).rowcount > 0

    def is_opted_out(self, channel: str, address: str) -> bool:
        with self._read() as conn:
            return conn.execute(_OPTED_OUT, {"channel_": channel, "address_": address}).first() is not None

    def opted_out_among(self, channel: str, addresses) -> set[str]:
        """Which of `addresses` asked to stop on `channel` (one statement)."""
        addresses = sorted(set(addresses))
        if not addresses:
            return set()
        with self._read() as conn:
            return {r[0] for r in conn.execute(_OPTED_OUT_AMONG, {"channel_": channel, "addresses_": addresses})}

    # ---- provider webhook dedupe ----
    def remember_webhook_event(self, source: str, event_id: str, now: datetime | None = None) -> bool:
        """True the first time (source, event_id) is seen, False for a repeat delivery."""
        try:
            with self._write(may_conflict=True) as conn:
                conn.execute(webhook_events.insert().values(source=source, event_id=event_id,
                                                            received_at=now or self.clock.now()))
            return True
        except IntegrityError:
            return False

    def forget_webhook_event(self, source: str, event_id: str) -> None:
        """Undo `remember_webhook_event` when applying the event failed, so a redelivery is applied."""
        with self._write() as conn:
            conn.execute(webhook_events.delete().where(webhook_events.c.source == source)
                         .where(webhook_events.c.event_id == event_id))

    def forget_webhook_events(self, before: datetime) -> int:
        with self._write() as conn:
            return conn.execute(webhook_events.delete().where(webhook_events.c.received_at < before)).rowcount

    def ledger_update(self, key: str, **values) -> None:
        with self._write() as conn:
            conn.execute(messages.update().where(messages.c.key == key).values(**values))

    def ledger_rows(self, case_id: str | None = None) -> list[LedgerRow]:
        stmt = sa.select(messages).order_by(messages.c.created_at)
        if case_id:
            stmt = stmt.where(messages.c.case_id == case_id)
        with self._read() as conn:
            return [from_row(LedgerRow, r) for r in conn.execute(stmt).mappings()]

    # ---- outbox (the embedded SMS and email provider) ----
    def outbox_add(self, *, message_key: str, channel: str, recipient: str, case_id: str,
                   subject: str, body: str) -> int:
        """Idempotent on the ledger key: a second attempt returns the first row's id."""
        return self.outbox_add_all([dict(message_key=message_key, channel=channel, recipient=recipient,
                                         case_id=case_id, subject=subject, body=body)])[message_key]

    def outbox_add_all(self, items: list[dict]) -> dict[str, int]:
        """`outbox_add` for several messages in one statement (each of `items` holds its
        arguments): their ids by message key."""
        stmt = _insert_new(self.engine.dialect.name, outbox, "message_key", (outbox.c.id, outbox.c.message_key))
        at = self.clock.now()
        with self._write() as conn:
            ids = {key: int(new_id) for new_id, key in conn.execute(stmt, [{**item, "at": at} for item in items])}
        for item in items:
            if item["message_key"] not in ids:
                ids[item["message_key"]] = self.outbox_id(item["message_key"])
        return ids

    def outbox_id(self, message_key: str) -> int | None:
        with self._read() as conn:
            return conn.execute(sa.select(outbox.c.id).where(outbox.c.message_key == message_key)).scalar()

    def outbox_list(self, limit: int = 500) -> list[OutboxMessage]:
        with self._read() as conn:
            return [from_row(OutboxMessage, r)
                    for r in conn.execute(sa.select(outbox).order_by(outbox.c.id).limit(limit)).mappings()]

    def outbox_recent(self, limit: int = 50, case_id: str | None = None) -> list[OutboxMessage]:
        """The newest messages first (what `flask outbox` shows), optionally of one case."""
        stmt = sa.select(outbox).order_by(outbox.c.id.desc()).limit(limit)
        if case_id:
            stmt = stmt.where(outbox.c.case_id == case_id)
        with self._read() as conn:
            return [from_row(OutboxMessage, r) for r in conn.execute(stmt).mappings()]
