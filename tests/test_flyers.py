"""Flyers (issue 13): `flask flyers make|list`, the printed PDF's QR code read back from a
picture of the page, `/f/<tag>` counting scans per tag and day and sending each form its tag,
and the Flyers table on the SQL and Airtable stores."""
from __future__ import annotations

import shutil
import subprocess
from datetime import date, datetime, timedelta, timezone

import pytest

from integrations import airtable, database
from tests.fake_airtable import FakeAirtable
from workflows import flyers
from workflows.model import Case, Flyer, FlyerExists

BASE_URL = "https://peer.example.org"
QUALTRICS = "https://acme.qualtrics.com/jfe/form/SV_abc123"
REDCAP = "https://redcap.example.edu/surveys/?s=HX7K2P9"
# 2026-03-01 04:30 UTC is still 2026-02-28 in New York (the program's zone).
T0 = datetime(2026, 3, 1, 4, 30, tzinfo=timezone.utc)


@pytest.fixture
def overrides(overrides):
    return {**overrides, "PUBLIC_BASE_URL": BASE_URL, "QUALTRICS_SURVEY_URL": QUALTRICS,
            "REDCAP_SURVEY_URL": REDCAP}


def make(runner, tmp_path, *extra):
    result = runner.invoke(args=["flyers", "make", "--institution", "RRMC", "--unit", "4 North",
                                 "--out", str(tmp_path / "out"), *extra])
    assert result.exit_code == 0, result.output
    tag = result.output.split()[1]
    return tag, result.output


# ---- making a flyer ----

def test_make_prints_the_tag_and_link_and_writes_the_pdf_and_the_qr_code(runner, ctx, tmp_path):
    ctx.clock.pin(T0)
    tag, output = make(runner, tmp_path)
    assert flyers.TAG_PATTERN.match(tag) and tag.startswith("rrmc-4north-") and len(tag) == len("rrmc-4north-7k2")
    assert f"{BASE_URL}/f/{tag}" in output
    out = tmp_path / "out"
    assert (out / f"{tag}.pdf").read_bytes().startswith(b"%PDF")
    assert (out / f"{tag}-qr.png").read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in (out / f"{tag}-qr.svg").read_bytes()
    flyer = ctx.store.find_flyer(tag)
    assert (flyer.institution, flyer.unit, flyer.form, flyer.link, flyer.created_at) == (
        "RRMC", "4 North", "Built-in", f"{BASE_URL}/f/{tag}", T0)


def test_the_printed_qr_code_reads_back_as_the_flyers_link(runner, tmp_path):
    """Render the PDF's page to a picture, as a phone's camera would see the printout, and
    decode the QR code in it."""
    if not shutil.which("pdftoppm"):
        pytest.skip("pdftoppm is not installed (Debian: poppler-utils; .ci/run installs it)")
    if not shutil.which("zbarimg"):
        pytest.skip("zbarimg is not installed (Debian: zbar-tools; .ci/run installs it)")
    tag, _ = make(runner, tmp_path)
    pdf = tmp_path / "out" / f"{tag}.pdf"
    subprocess.run(["pdftoppm", "-r", "100", "-png", "-singlefile", str(pdf), str(tmp_path / "page")],
                   check=True, timeout=60)
    page = tmp_path / "page.png"
    assert page.exists()
    pages = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, timeout=60).stdout \
        if shutil.which("pdfinfo") else ""
    if pages:
        assert "612 x 792 pts (letter)" in pages
    decoded = subprocess.run(["zbarimg", "--quiet", "--raw", str(page)], capture_output=True, text=True,
                             timeout=60)
    assert decoded.stdout.strip() == f"{BASE_URL}/f/{tag}"
    # The QR code alone (PNG) reads the same.
    alone = subprocess.run(["zbarimg", "--quiet", "--raw", str(tmp_path / "out" / f"{tag}-qr.png")],
                           capture_output=True, text=True, timeout=60)
    assert alone.stdout.strip() == f"{BASE_URL}/f/{tag}"
    # 988 first, then the program, and the short link to type.
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          timeout=60).stdout if shutil.which("pdftotext") else ""
    if text:
        assert text.index("988") < text.index("Clinician Peer Support Network") < text.index(f"/f/{tag}")
        assert "Confidential" in text


def test_unknown_institution_or_unset_form_link_exits_non_zero_naming_it(runner, app, tmp_path):
    bad = runner.invoke(args=["flyers", "make", "--institution", "XYZ", "--unit", "4 North",
                              "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "unknown institution 'XYZ'" in bad.output
    app.extensions["peerline"].settings["REDCAP_SURVEY_URL"] = None
    unset = runner.invoke(args=["flyers", "make", "--institution", "RRMC", "--unit", "4 North",
                                "--form", "redcap", "--out", str(tmp_path)])
    assert unset.exit_code != 0 and "REDCAP_SURVEY_URL is not set" in unset.output
    assert not list(tmp_path.glob("*.pdf"))
    assert app.extensions["peerline"].store.flyers() == []


def test_a_taken_tag_is_refused_by_the_database_and_another_is_picked(ctx, monkeypatch):
    ctx.store.create_flyer(Flyer(tag="rrmc-4north-aaa", institution="RRMC", unit="4 North"))
    with pytest.raises(FlyerExists):
        ctx.store.create_flyer(Flyer(tag="rrmc-4north-aaa", institution="RRMC", unit="4 North"))
    suffixes = iter(["aaa", "bbb"])
    real = flyers.make_tag
    monkeypatch.setattr(flyers, "make_tag", lambda inst, unit: real(inst, unit, next(suffixes)))
    assert flyers.make_flyer(ctx, "rrmc", "4 North").tag == "rrmc-4north-bbb"


# ---- scanning ----

def test_scans_are_counted_per_tag_and_day_in_the_program_zone(runner, client, ctx, tmp_path):
    tag, _ = make(runner, tmp_path)
    ctx.clock.pin(T0)
    for _ in range(3):
        assert client.get(f"/f/{tag}").status_code == 302
    ctx.clock.advance(timedelta(hours=6))       # 10:30 New York on 1 March
    client.get(f"/f/{tag}")
    assert ctx.db.flyer_scans_by_day(tag) == {date(2026, 2, 28): 3, date(2026, 3, 1): 1}
    assert ctx.db.flyer_scan_counts() == {tag: 4}
    assert ctx.db.flyer_scan_counts(since=date(2026, 3, 1)) == {tag: 1}


def test_a_scan_keeps_nothing_about_the_person(runner, client, ctx, tmp_path, caplog):
    tag, _ = make(runner, tmp_path)
    caplog.set_level("DEBUG")
    response = client.get(f"/f/{tag}", headers={"User-Agent": "PhoneBrowser/9.9"},
                          environ_base={"REMOTE_ADDR": "10.20.30.40"})
    assert response.status_code == 302
    assert "Set-Cookie" not in response.headers and response.headers["Cache-Control"] == "no-store"
    assert "10.20.30.40" not in caplog.text and "PhoneBrowser" not in caplog.text
    import sqlalchemy as sa
    with ctx.db.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(database.flyer_scans)).mappings()]
    assert [set(r) for r in rows] == [{"tag", "day", "count"}]


@pytest.mark.parametrize("form, target", [
    ("builtin", "/request?flyer={tag}"),
    ("qualtrics", QUALTRICS + "?flyer={tag}"),
    ("redcap", REDCAP + "&flyer={tag}"),
])
def test_a_scan_goes_to_the_flyers_form_with_its_tag(runner, client, tmp_path, form, target):
    tag, _ = make(runner, tmp_path, "--form", form)
    response = client.get(f"/f/{tag}")
    assert response.status_code == 302
    assert response.headers["Location"] == target.format(tag=tag)


def test_the_builtin_form_keeps_the_tag_on_the_case_and_list_counts_it(runner, client, ctx, tmp_path,
                                                                      run_worker, roster):
    tag, _ = make(runner, tmp_path)
    form_url = client.get(f"/f/{tag}").headers["Location"]
    page = client.get(form_url)
    assert page.status_code == 200 and tag.encode() in page.data
    import re
    token = re.search(rb'name="csrf_token"[^>]*value="([^"]+)"', page.data).group(1).decode()
    posted = client.post(form_url, data={
        "csrf_token": token, "flyer": tag, "submission_id": "flyer-test-1", "for_whom": "Self",
        "requester_name": "Sam", "requester_phone": "555 010 1234", "preferred_contact": "Text message",
        "institution": "RRMC", "role": "Nurse", "role_preference": "Any", "department_preference": "Any",
        "urgency": "Routine"})
    assert posted.status_code == 303, posted.data[:2000]
    run_worker()
    assert [c.flyer for c in ctx.store.list_cases()] == [tag]
    listing = runner.invoke(args=["flyers", "list"])
    assert listing.exit_code == 0
    header, row = listing.output.splitlines()[:2]
    assert header.split()[:6] == ["Tag", "Institution", "Unit", "Form", "Scans", "Submissions"]
    assert row.split()[:7] == [tag, "RRMC", "4", "North", "Built-in", "1", "1"]
    assert "EST" in row or "EDT" in row
    assert flyers.funnel_for(ctx) == [flyers.FunnelRow(tag, "RRMC", "4 North", "Built-in", 1, 1, 1)]


@pytest.mark.parametrize("path", ["/f/no-such-flyer", "/f/NOT%20A%20TAG", "/f/" + "x" * 500, "/f/a/b/../c",
                                  "/f/%00", "/f/-"])
def test_an_unknown_tag_lands_on_the_builtin_form_uncounted(client, ctx, path):
    response = client.get(path)
    assert response.status_code == 302 and response.headers["Location"] == "/request"
    assert ctx.db.flyer_scan_counts() == {}


def test_a_store_or_database_out_of_reach_still_sends_the_person_to_a_form(runner, client, ctx, tmp_path,
                                                                          monkeypatch):
    tag, _ = make(runner, tmp_path, "--form", "qualtrics")

    def broken(*a, **k):
        raise ConnectionError("down")
    monkeypatch.setattr(ctx.db, "count_flyer_scan", broken)
    assert client.get(f"/f/{tag}").headers["Location"] == f"{QUALTRICS}?flyer={tag}"
    monkeypatch.setattr(ctx.store, "find_flyer", broken)
    response = client.get(f"/f/{tag}")
    assert response.status_code == 302 and response.headers["Location"] == f"/request?flyer={tag}"


# ---- the funnel (pure) ----

def test_funnel_counts_scans_submissions_and_cases_per_tag_and_unit():
    a = Flyer(tag="rrmc-4north-aaa", institution="RRMC", unit="4 North", form="Built-in")
    b = Flyer(tag="rrmc-4north-bbb", institution="RRMC", unit="4 North", form="Qualtrics")
    c = Flyer(tag="nch-icu-ccc", institution="NCH", unit="ICU", form="REDCap")
    cases = [Case(case_id="PS-1", source="web", flyer=a.tag), Case(case_id="PS-2", source="qualtrics", flyer=b.tag),
             Case(case_id="PS-3", source="qualtrics", flyer=b.tag), Case(case_id="PS-4", source="web")]
    rows = flyers.funnel([a, b, c], {a.tag: 10, b.tag: 4, "gone": 7}, {a.tag: 2}, cases)
    assert [(r.tag, r.scans, r.submissions, r.cases) for r in rows] == [
        (a.tag, 10, 2, 1), (b.tag, 4, 2, 2), (c.tag, 0, 0, 0)]
    assert [(r.institution, r.unit, r.scans, r.submissions, r.cases) for r in flyers.funnel_by_unit(rows)] == [
        ("NCH", "ICU", 0, 0, 0), ("RRMC", "4 North", 14, 4, 3)]


def test_form_target_keeps_the_links_own_query():
    settings = {"QUALTRICS_SURVEY_URL": QUALTRICS + "?Q_Language=EN", "REDCAP_SURVEY_URL": REDCAP}
    assert flyers.form_target(settings, "Qualtrics", "t-1") == QUALTRICS + "?Q_Language=EN&flyer=t-1"
    assert flyers.form_target(settings, "REDCap", "t-1") == REDCAP + "&flyer=t-1"


# ---- the Flyers table on the stores ----

def test_flyers_on_postgresql(pg_url):
    from config import settings as settings_module
    db = database.Database(settings_module.database_url({"DATABASE_URL": pg_url}))
    store = database.SqlCaseStore(db)
    store.create_flyer(Flyer(tag="rrmc-4north-aaa", institution="RRMC", unit="4 North", created_at=T0))
    with pytest.raises(FlyerExists):
        store.create_flyer(Flyer(tag="rrmc-4north-aaa"))
    db.count_flyer_scan("rrmc-4north-aaa", date(2026, 3, 1))
    db.count_flyer_scan("rrmc-4north-aaa", date(2026, 3, 1))
    assert db.flyer_scans_by_day("rrmc-4north-aaa") == {date(2026, 3, 1): 2}
    assert [f.tag for f in store.flyers()] == ["rrmc-4north-aaa"]


def test_a_flyer_on_the_airtable_store(mocked):
    url, base = "https://api.airtable.test", "appFlyers0000001"
    fake = FakeAirtable(token="patFlyers")
    fake.add_base(base)
    fake.install(mocked, url)
    store = airtable.AirtableCaseStore("patFlyers", base, api_url=url, throttle=airtable.Throttle(0))
    created, refused = airtable.init_base(store)
    assert "table Flyers (6 fields)" in created and not refused
    table = {t["name"]: t for t in fake.bases[base]}["Flyers"]
    assert [f["name"] for f in table["fields"]] == ["Tag", "Institution", "Unit", "Form", "Link", "Created At"]
    flyer = Flyer(tag="rrmc-4north-7k2", institution="RRMC", unit="4 North", form="REDCap",
                  link=f"{BASE_URL}/f/rrmc-4north-7k2", created_at=T0)
    made = store.create_flyer(flyer)
    assert made.record_id.startswith("rec") and made.created_at == T0
    with pytest.raises(FlyerExists):
        store.create_flyer(flyer)
    found = store.find_flyer("rrmc-4north-7k2")
    assert (found.institution, found.unit, found.form, found.link) == ("RRMC", "4 North", "REDCap", flyer.link)
    assert store.find_flyer("rrmc-4north-zzz") is None
    assert [f.tag for f in store.flyers()] == ["rrmc-4north-7k2"]
