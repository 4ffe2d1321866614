"""The command line a coordinator uses on the embedded defaults."""
from __future__ import annotations

import json
import logging
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.test_intake import submit

ZONE = ZoneInfo("America/New_York")      # config/program.toml timezone


def local(when: datetime) -> str:
    """How a program-zone reader sees `when`: 21:43 EST, not 02:43 UTC."""
    return when.astimezone(ZONE).strftime("%H:%M %Z")


def column(header: str, line: str, name: str) -> str:
    """The value under `name` in a row of an aligned table (up to the next double space)."""
    start = header.index(name)
    return line[start:].split("  ")[0].strip()


def test_outbox_lists_each_message_on_one_line_and_as_json(client, ctx, roster, run_worker, runner):
    submit(client)
    run_worker()
    [case] = ctx.store.list_cases()
    header, *lines = runner.invoke(args=["outbox"]).output.strip().splitlines()
    assert header.split() == ["Sent", "Channel", "To", "Case", "Text"]
    messages = ctx.db.outbox_list()
    assert len(lines) == len(messages) > 0
    assert all(column(header, line, "Case") == case.case_id for line in lines)
    assert all(local(m.at) in line and "UTC" not in line for m, line in zip(reversed(messages), lines))
    rows = [json.loads(line) for line in runner.invoke(args=["outbox", "--json"]).output.splitlines()]
    assert {r["channel"] for r in rows} == {"sms", "email"}
    assert set(rows[0]) == {"at", "channel", "to", "case", "subject", "text"}
    assert all(r["case"] == case.case_id and case.ref in r["text"] for r in rows)
    assert datetime.fromisoformat(rows[0]["at"]).utcoffset() == messages[-1].at.astimezone(ZONE).utcoffset()


def add_messages(ctx, count: int, case_id: str) -> None:
    for n in range(count):
        ctx.db.outbox_add(message_key=f"{case_id}:test-{n}:sms", channel="sms", recipient="+15550101101",
                          case_id=case_id, subject="", body=f"message {n} of {case_id}")


def test_outbox_shows_the_newest_messages_first_and_filters_by_case(ctx, runner):
    add_messages(ctx, 520, "PS-1111")
    add_messages(ctx, 3, "PS-2222")
    rows = [json.loads(line) for line in runner.invoke(args=["outbox", "--json"]).output.splitlines()]
    assert len(rows) == 50 and rows[0]["text"] == "message 2 of PS-2222"
    lines = runner.invoke(args=["outbox", "--limit", "2"]).output.strip().splitlines()
    assert len(lines) == 3 and "message 2 of PS-2222" in lines[1] and "message 1 of PS-2222" in lines[2]
    rows = [json.loads(line) for line in runner.invoke(args=["outbox", "--json", "--case", "1111",
                                                             "--limit", "1000"]).output.splitlines()]
    assert len(rows) == 520 and {r["case"] for r in rows} == {"PS-1111"} and rows[0]["text"] == "message 519 of PS-1111"
    assert "No messages for PS-3333" in runner.invoke(args=["outbox", "--case", "PS-3333"]).output
    refused = runner.invoke(args=["outbox", "--limit", "0"])
    assert refused.exit_code == 2 and "--limit" in refused.output


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


def test_roster_import_reads_phones_as_intake_does_and_names_the_ones_it_cannot(tmp_path, ctx, runner):
    csv = tmp_path / "roster.csv"
    csv.write_text("Type,Name,Phone,Institution\n"
                   "supporter,Avery Chen,(555) 010-1101,RRMC\n"
                   "supporter,Sam Doe,555 010 11,RRMC\n")
    result = runner.invoke(args=["roster", "import", str(csv)])
    assert result.exit_code == 0
    assert "line 3: Phone is not a number we can call or text" in result.output and "555 010 11" not in result.output
    assert {s.name: s.phone for s in ctx.store.supporters()} == {"Avery Chen": "+15550101101", "Sam Doe": "555 010 11"}


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


def test_cases_list_has_a_header_and_times_in_the_program_zone(client, ctx, roster, run_worker, runner):
    submit(client)
    run_worker()
    [case] = ctx.store.list_cases()
    header, line = runner.invoke(args=["cases", "list"]).output.strip().splitlines()
    assert header.startswith("Case") and "Status" in header and "Review due" in header
    assert column(header, line, "Case") == case.case_id and column(header, line, "Status") == case.status
    assert local(case.review_due) in column(header, line, "Review due") and "UTC" not in line


def test_cases_list_refuses_a_status_that_does_not_exist(client, ctx, roster, run_worker, runner):
    submit(client, institution="")
    run_worker()
    refused = runner.invoke(args=["cases", "list", "--status", "Bogus"])
    assert refused.exit_code == 2 and "'Bogus' is not one of" in refused.output
    assert "needs attention" in refused.output.lower()
    found = runner.invoke(args=["cases", "list", "--status", "needs attention"])
    assert found.exit_code == 0 and len(found.output.strip().splitlines()) == 2
    assert runner.invoke(args=["cases", "list", "--status", "Closed"]).output == "No cases with Status Closed.\n"


def test_replaying_an_unknown_submission_says_what_to_do(runner):
    result = runner.invoke(args=["inbox", "replay", "999"])
    assert result.exit_code != 0 and "flask inbox list" in result.output


def test_closing_an_unknown_case_fails_saying_so(runner):
    result = runner.invoke(args=["cases", "close", "PS-0001"])
    assert result.exit_code == 1 and "No case PS-0001" in result.output


@pytest.mark.parametrize("content, problem", [
    ("Name;Phone\nAvery Chen;+15550101101\n", "the first line must name the columns, at least Type and Name"),
    ("Type,Name,Phone\n", "has no row that can be loaded"),
    ("Type,Name\nvolunteer,Pat Roe\n", "line 2: Type must be supporter, reviewer or resource"),
])
def test_roster_import_that_loads_nothing_fails_and_names_the_problem(tmp_path, ctx, runner, content, problem):
    path = tmp_path / "roster.csv"
    path.write_text(content)
    result = runner.invoke(args=["roster", "import", str(path)])
    assert result.exit_code == 1 and problem in result.output and "Imported" not in result.output
    assert ctx.store.roster_is_empty()


def test_roster_import_of_a_file_that_is_not_utf8_fails(tmp_path, ctx, runner):
    path = tmp_path / "roster.csv"
    path.write_bytes("Type,Name\nsupporter,Zoë Ng\n".encode("cp1252"))
    result = runner.invoke(args=["roster", "import", str(path)])
    assert result.exit_code == 1 and "not UTF-8" in result.output and ctx.store.roster_is_empty()


@pytest.fixture
def root_level():
    """app.py's INFO level on the root logger, as in a real `flask` process; restored afterwards."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    yield root
    root.setLevel(before)


def test_commands_log_only_warnings_unless_verbose(root_level, runner, caplog):
    quiet = runner.invoke(args=["sms", "simulate", "+15550101101", "HELP"])
    assert quiet.exit_code == 0 and not [r for r in caplog.records if r.levelno < logging.WARNING]
    loud = runner.invoke(args=["sms", "simulate", "--verbose", "+15550101101", "HELP"])
    assert loud.exit_code == 0 and any("twilio sms handled" in r.getMessage() for r in caplog.records)
    runner.invoke(args=["cases", "list", "-v"])
    assert root_level.level == logging.INFO


def test_airtable_commands_say_when_airtable_cannot_be_reached(overrides, request):
    overrides.update(AIRTABLE_API_KEY="patTest.secret", AIRTABLE_BASE_ID="appTest000000001",
                     AIRTABLE_API_URL="https://api.airtable.test")      # nothing answers there
    runner = request.getfixturevalue("runner")
    result = runner.invoke(args=["airtable", "check"])
    assert result.exit_code == 1 and "Could not reach Airtable at https://api.airtable.test" in result.output


def test_sms_simulate_refuses_what_is_not_a_phone_number(ctx, runner):
    result = runner.invoke(args=["sms", "simulate", "Avery", "YES 4821"])
    assert result.exit_code == 2 and "'Avery' is not a phone number" in result.output


def test_a_first_command_on_a_fresh_machine_prints_no_log_lines(tmp_path):
    """A real `flask` process on an empty DATA_DIR: the database is created and migrated on the
    way, and none of that is narrated on the terminal (logs: warnings and up, unless -v)."""
    import os
    import subprocess
    import sys
    from config import settings
    env = {k: v for k, v in os.environ.items() if k not in settings.DEFAULTS}
    env.update(DATA_DIR=str(tmp_path / "var"))
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    done = subprocess.run([flask, "--app", "app", "outbox"], cwd=settings.ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "No messages."
    assert done.stderr == ""
