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
    assert len({m.message_key for m in ctx.db.outbox_list()}) == len(ctx.db.outbox_list()) > 0


def test_duplicate_case_rows_in_airtable_park_at_once_tell_the_leads_and_replay_after_the_fix(
        fake, client, ctx, runner, run_worker):
    """reliability.md section 7 case 11: an upsert answered 422 "multiple matches" is parked at
    once (not retried RETRY_MAX_ATTEMPTS times), the leads are emailed the Case IDs to merge,
    no third row is made, and a replay after the fix files the submission."""
    airtable.init_base(ctx.store)
    runner.invoke(args=["roster", "import", "config/sample_roster.csv"])
    ctx.store.throttle.sleep = lambda seconds: None
    assert submit(client).status_code == 303
    [row] = ctx.db.list_inbox()

    from integrations.airtable.schema import _fields_of
    from tests.test_store_contract import a_case
    from workflows.model import CASE_FIELDS

    def two_copies(fake):   # an earlier race / a copied row appears between our look-up and our upsert
        for case_id in ("PS-1111", "PS-2222"):
            fields = _fields_of(a_case(case_id=case_id, source_response_id=row.source_key), CASE_FIELDS, "Cases")
            fake.add_record(BASE, "Cases", fields)
    fake.before_next_write(two_copies)
    run_worker()

    [row] = ctx.db.list_inbox()
    assert row.status == "parked" and row.attempts == 1
    assert "duplicate rows in Airtable" in row.last_error and "PS-1111, PS-2222" in row.last_error
    assert len(fake.records(BASE, "Cases")) == 2                  # no third row
    mails = [m for m in ctx.db.outbox_list() if "duplicate case rows" in m.subject]
    assert mails and all("PS-1111, PS-2222" in m.body and row.source_key in m.body
                         and f"inbox replay {row.id}" in m.body and "Zebulon" not in m.body
                         for m in mails)

    # A coordinator deletes the copy; the replay files the submission on the row that is left.
    keep, drop = sorted(fake.records(BASE, "Cases"), key=lambda r: r["fields"]["Case ID"])
    del fake.table(BASE, "Cases")["records"][drop["id"]]
    replayed = runner.invoke(args=["inbox", "replay", str(row.id)])
    assert replayed.exit_code == 0 and "is case PS-1111" in replayed.output, replayed.output
    assert len(fake.records(BASE, "Cases")) == 1
    assert len(mails) == len([m for m in ctx.db.outbox_list() if "duplicate case rows" in m.subject])
