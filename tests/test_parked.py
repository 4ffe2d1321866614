"""The parked-and-replayed path on the spine: the case store (Airtable) is down longer than the
retries last, the submission is parked and shown to a coordinator without its answers, and a
replay after Airtable recovers makes exactly one case."""
from __future__ import annotations

from integrations import airtable
from tests.test_airtable import BASE, fake, overrides  # noqa: F401  (fixtures)
from tests.test_intake import submit


def test_airtable_down_parks_the_submission_and_replay_makes_one_case(fake, client, ctx, runner, run_worker):
    airtable.init_base(ctx.store)
    runner.invoke(args=["roster", "import", "config/sample_roster.csv"])
    ctx.store.throttle.sleep = lambda seconds: None      # the store's own backoff, not waited here
    assert submit(client).status_code == 303

    fake.refuse_next(BASE, 503, count=10_000)            # Airtable is down
    run_worker()
    [row] = ctx.db.list_inbox()
    assert row.status == "parked" and row.attempts == int(ctx.settings["RETRY_MAX_ATTEMPTS"])
    assert ctx.db.outbox_list() == []

    listed = runner.invoke(args=["inbox", "list"])
    assert listed.output.splitlines()[1].split()[:3] == [str(row.id), "web", "parked"]
    assert "HTTPError (HTTP 503)" in listed.output
    assert "Zebulon" not in listed.output and "0123" not in listed.output

    fake.stop_refusing(BASE)                             # Airtable is back
    replayed = runner.invoke(args=["inbox", "replay", str(row.id)])
    assert replayed.exit_code == 0 and "is case PS-" in replayed.output, replayed.output
    runner.invoke(args=["inbox", "replay", str(row.id)])   # a second replay changes nothing
    [case] = ctx.store.list_cases()
    assert case.requester_name == "Zebulon"
    assert len(fake.records(BASE, "Cases")) == 1
    assert len({m["message_key"] for m in ctx.db.outbox_list()}) == len(ctx.db.outbox_list()) > 0
