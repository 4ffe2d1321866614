"""The command line a coordinator uses on the embedded defaults."""
from __future__ import annotations

import json

from tests.test_intake import submit


def test_outbox_lists_each_message_on_one_line_and_as_json(client, ctx, roster, run_worker, runner):
    submit(client)
    run_worker()
    [case] = ctx.store.list_cases()
    lines = runner.invoke(args=["outbox"]).output.strip().splitlines()
    assert len(lines) == len(ctx.db.outbox_list()) > 0
    assert all(case.case_id in line and " UTC " in line for line in lines)
    rows = [json.loads(line) for line in runner.invoke(args=["outbox", "--json"]).output.splitlines()]
    assert {r["channel"] for r in rows} == {"sms", "email"}
    assert set(rows[0]) == {"at", "channel", "to", "case", "subject", "text"}
    assert all(r["case"] == case.case_id and case.ref in r["text"] for r in rows)


def test_roster_import_names_bad_rows_and_loads_the_rest(tmp_path, ctx, runner):
    csv = tmp_path / "roster.csv"
    csv.write_text("Type,Name,Phone,Institution,Max Open Cases,Colour\n"
                   "supporter,Avery Chen,+15550101101,RRMC,2,blue\n"
                   "supporter,Sam Doe,+15550101102,RRMC,lots,\n"
                   "volunteer,Pat Roe,+15550101103,NCH,,\n"
                   "reviewer,,+15550101104,NCH,,\n")
    result = runner.invoke(args=["roster", "import", str(csv)])
    assert result.exit_code == 0
    assert "unknown columns ignored: Colour" in result.output
    assert "line 3: Max Open Cases must be a whole number" in result.output
    assert "line 4: Type must be supporter, reviewer or resource" in result.output
    assert "line 5: Name is empty" in result.output
    assert [s.name for s in ctx.store.supporters()] == ["Avery Chen"]
    runner.invoke(args=["roster", "import", str(csv)])           # again: updated, not doubled
    assert len(ctx.store.supporters()) == 1


def test_roster_seed_loads_the_sample_only_into_an_empty_store(ctx, runner):
    assert "Loaded the sample roster" in runner.invoke(args=["roster", "seed"]).output
    count = len(ctx.store.supporters())
    assert count == 24
    assert runner.invoke(args=["roster", "seed"]).output == ""
    assert len(ctx.store.supporters()) == count


def test_cases_list_shows_state_but_no_personal_details(client, ctx, roster, run_worker, runner):
    submit(client, institution="")
    run_worker()
    output = runner.invoke(args=["cases", "list"]).output
    assert "Needs attention" in output and "Institution: missing" in output
    assert "Zebulon" not in output and "0123" not in output


def test_replaying_an_unknown_submission_says_what_to_do(runner):
    result = runner.invoke(args=["inbox", "replay", "999"])
    assert result.exit_code != 0 and "flask inbox list" in result.output
