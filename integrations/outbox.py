"""The embedded SMS and email provider: messages are written to the outbox table and
listed by `flask outbox`. Used when Twilio or SendGrid is not configured."""
from __future__ import annotations


class OutboxSender:
    #: Its messages are rows of the Context's own database: a send can join `db.unit_of_work()`,
    #: and a case's messages go in one statement (`send_all`, workflows/notify.py).
    in_database = True

    def __init__(self, db):
        self.db = db

    def send(self, *, message_key, channel, to, case_id, subject, body) -> str:
        return f"outbox:{self.db.outbox_add(message_key=message_key, channel=channel, recipient=to, case_id=case_id, subject=subject, body=body)}"

    def send_all(self, messages: list[dict]) -> dict[str, str]:
        """`send` for several messages (each of `messages` holds its arguments) in one
        statement: their provider ids by message key."""
        ids = self.db.outbox_add_all([{"message_key": m["message_key"], "channel": m["channel"], "recipient": m["to"],
                                       "case_id": m["case_id"], "subject": m["subject"], "body": m["body"]}
                                      for m in messages])
        return {key: f"outbox:{found}" for key, found in ids.items()}

    def find_sent(self, *, message_key, channel, to) -> str | None:
        found = self.db.outbox_id(message_key)
        return f"outbox:{found}" if found else None
