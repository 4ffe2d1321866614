"""/dashboard, /dashboard.json, /dashboard.csv and `flask report`: leads only, the same numbers,
small numbers suppressed, and nothing that names or reaches a person (canaries)."""
from __future__ import annotations

import base64
import csv
import io
import logging
import re
from datetime import datetime, timedelta, timezone

import pytest

from tests.test_console import LEAD, NCH_COORD, add_staff, sign_in, staff  # noqa: F401 (fixture)
from workflows.model import Case

CANARY = {"requester_name": "Qzx9Name", "requester_phone": "+15550137929", "requester_email": "qzx9mail@example.org",
          "referrer_name": "Qzx9Referrer", "department": "Qzx9Dept", "specialty": "Qzx9Spec",
          "problems": "Qzx9Problem free text"}
JAN = datetime(2026, 1, 15, 15, 0, tzinfo=timezone.utc)


def basic(email, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{email}:{password}".encode()).decode()}


def seed(ctx, n_nch=14, n_rrmc=3, *, role_of=lambda i: "Nurse"):
    """Cases in January 2026 (with canaries in every personal field) and one in February."""
    made = []
    for i in range(n_nch + n_rrmc):
        made.append(ctx.store.create_case(Case(
            case_id=f"PS-{7100 + i}", source="web", source_response_id=f"web:qzx9{i}", submitted_at=JAN,
            status="New", urgency="Crisis" if i == 0 else "Routine", for_whom="Self",
            institution="NCH" if i < n_nch else "RRMC", role=role_of(i), **CANARY)))
    ctx.store.create_case(Case(case_id="PS-7999", source="web", source_response_id="web:qzx9feb",
                               submitted_at=JAN + timedelta(days=31), institution="NCH", role="Nurse"))
    return made


def rows_of(text):
    return list(csv.reader(io.StringIO(text)))


def test_leads_only_and_the_answers_for_everyone_else(client, ctx, staff):  # noqa: F811
    assert client.get("/dashboard").status_code == 302
    assert "/console/login" in client.get("/dashboard").headers["Location"]
    for path in ("/dashboard.json", "/dashboard.csv"):
        signed_out = client.get(path)
        assert signed_out.status_code == 401 and signed_out.headers["WWW-Authenticate"].startswith("Basic")
        wrong = client.get(path, headers=basic(LEAD[0], "not-the-password"))
        assert wrong.status_code == 401 and "WWW-Authenticate" in wrong.headers
        assert client.get(path, headers=basic(*LEAD)).status_code == 401    # that address waits a little
        ctx.clock.advance(timedelta(minutes=20))
        assert client.get(path, headers=basic(*NCH_COORD)).status_code == 403
        assert client.get(path, headers=basic(*LEAD)).status_code == 200
    page = client.get("/console/login")
    assert "csrf_token" in page.get_data(as_text=True), page.get_data(as_text=True)[-1500:]
    sign_in(client, *NCH_COORD)
    assert client.get("/dashboard").status_code == 403
    assert client.get("/dashboard.csv").status_code == 403
    client = client.application.test_client()
    sign_in(client, *LEAD)
    assert client.get("/dashboard").status_code == 200
    assert client.get("/dashboard.json").status_code == 200
    assert client.get("/dashboard?from=2026-13&to=2026-01").status_code == 400


def test_csv_json_and_page_carry_the_same_suppressed_numbers(client, ctx, staff, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    seed(ctx)
    ctx.clock.pin(datetime(2026, 3, 10, tzinfo=timezone.utc))
    query = "?from=2026-01&to=2026-01"
    table = rows_of(client.get("/dashboard.csv" + query, headers=basic(*LEAD)).get_data(as_text=True))
    assert table[0] == ["measure", "dimension", "group", "value"]
    got = {(m, d, g): v for m, d, g, v in table[1:]}
    assert got[("requests", "month", "All")] == "17"               # February is outside whole-month January
    assert got[("requests", "institution", "RRMC")] == "<11"       # 3: small
    assert got[("requests", "institution", "NCH")] == "<11"        # 14: hidden, else 17 - 14 gives RRMC back
    assert got[("crisis_requests", "month", "All")] == "<11"
    for value in got.values():
        assert value == "<11" or value.isdigit()
    data = client.get("/dashboard.json" + query, headers=basic(*LEAD)).get_json()
    assert {(r["measure"], r["dimension"], r["group"]): str(r["value"]) for r in data["rows"]} == got
    sign_in(client, *LEAD)
    page = client.get("/dashboard" + query).get_data(as_text=True)
    assert "Requests by institution" in page and "&lt;11" in page
    every = page + str(data) + "\n".join(",".join(r) for r in table) + caplog.text
    flat = every.replace(" ", "")
    for secret in list(CANARY.values()) + ["5550137929", "PS-71", "7100", "qzx9"]:
        assert secret.lower() not in flat.lower(), secret


def test_a_role_typed_by_hand_is_not_published(client, ctx, staff):  # noqa: F811
    seed(ctx, n_nch=12, n_rrmc=0, role_of=lambda i: "Qzx9 Typed Role" if i == 1 else "Nurse")
    ctx.clock.pin(datetime(2026, 3, 10, tzinfo=timezone.utc))
    text = client.get("/dashboard.csv?from=2026-01&to=2026-01", headers=basic(*LEAD)).get_data(as_text=True)
    assert "Qzx9" not in text and "(other)" in text


def test_flask_report_prints_the_same_csv(runner, client, ctx, staff):  # noqa: F811
    seed(ctx)
    ctx.clock.pin(datetime(2026, 3, 10, tzinfo=timezone.utc))
    web = client.get("/dashboard.csv?from=2026-01&to=2026-02", headers=basic(*LEAD)).get_data(as_text=True)
    out = runner.invoke(args=["report", "--from", "2026-01", "--to", "2026-02", "--csv"])
    assert out.exit_code == 0, out.output
    assert out.output == web
    text = runner.invoke(args=["report", "--from", "2026-01", "--to", "2026-02"])
    assert text.exit_code == 0 and "requests" in text.output and "<11" in text.output
    assert runner.invoke(args=["report", "--from", "2026-1"]).exit_code != 0


@pytest.fixture
def pg_app(pg_url, overrides):
    from app import create_app
    from integrations import database
    application = create_app({**overrides, "DATABASE_URL": pg_url})
    application.config.update(TESTING=True)
    yield application
    database.dispose_engines()


def test_the_report_on_postgresql(pg_app):
    ctx = pg_app.extensions["peerline"]
    add_staff(ctx, *LEAD, role="lead")
    seed(ctx)
    ctx.clock.pin(datetime(2026, 3, 10, tzinfo=timezone.utc))
    text = pg_app.test_client().get("/dashboard.csv?from=2026-01&to=2026-01",
                                    headers=basic(*LEAD)).get_data(as_text=True)
    assert "requests,month,All,17" in text and "Qzx9" not in text
