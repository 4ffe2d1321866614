"""The form's rate limit is one count for the whole deployment, whatever process answers.

Each "process" here is a separate app built by `create_app` on the same settings (as each
gunicorn worker builds its own), sharing DATA_DIR, PostgreSQL or Redis.
"""
from __future__ import annotations

import re
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from config.settings import SettingsError

GOOD = {"for_whom": "Self", "requester_name": "Zebulon", "requester_phone": "+1 555 010 0123",
        "requester_email": "", "preferred_contact": "Text message", "institution": "NCH",
        "department": "Surgery", "role": "Nurse", "specialty": "", "role_preference": "Any",
        "department_preference": "Any", "urgency": "Routine"}


def process(overrides, **settings):
    """One web process: its own app, limiter and connections, on the shared settings."""
    from app import create_app
    app = create_app({**overrides, "RATELIMIT_ENABLED": "true", **settings})
    app.config.update(TESTING=True)
    app.extensions["peerline"].enqueue = lambda *a, **k: None
    return app


def post(client, **changes):
    """The form, opened and sent as a browser does: the answer to the POST."""
    html = client.get("/request").get_data(as_text=True)
    hidden = {name: re.search(rf'name="{name}" type="hidden" value="([^"]*)"', html).group(1)
              for name in ("csrf_token", "submission_id", "flyer")}
    return client.post("/request", data={**hidden, **GOOD, **changes})


def send(client, **changes):
    return post(client, **changes).status_code


def same_browser(app, on):
    """`on`'s browser, now talking to `app` (the load balancer sent it to another process)."""
    client = app.test_client()
    client.set_cookie("session", on.get_cookie("session").value)
    return client


def check_one_count_across_processes(overrides, **settings):
    a = process(overrides, REQUEST_RATE_LIMIT="3 per minute", **settings)
    browser = a.test_client()
    assert [send(browser), send(browser)] == [303, 303]
    b = process(overrides, REQUEST_RATE_LIMIT="3 per minute", **settings)   # a second worker starts
    browser = same_browser(b, browser)
    assert [send(browser), send(browser)] == [303, 429]


def test_one_browser_is_counted_once_across_two_processes_on_sqlite(overrides):
    check_one_count_across_processes(overrides)


@pytest.mark.postgres
def test_one_browser_is_counted_once_across_two_processes_on_postgresql(overrides, pg_url):
    check_one_count_across_processes(overrides, DATABASE_URL=pg_url, SECRET_KEY=uuid.uuid4().hex)


def test_one_browser_is_counted_once_across_two_processes_on_redis(overrides):
    try:
        import redis
        redis.Redis.from_url("redis://127.0.0.1:6379", socket_connect_timeout=2).ping()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"Redis not reachable at 127.0.0.1:6379 ({type(exc).__name__})")
    # A fresh SECRET_KEY gives this test its own keys on a shared Redis.
    check_one_count_across_processes(overrides, REDIS_URL="redis://127.0.0.1:6379/0",
                                     SECRET_KEY=uuid.uuid4().hex)


def test_colleagues_behind_one_hospital_address_do_not_use_up_each_others_allowance(overrides):
    """Twenty people on one NAT address, each sending once within a minute, all get through."""
    app = process(overrides)
    assert [send(app.test_client()) for _ in range(20)] == [303] * 20


def test_many_fresh_sessions_from_one_address_are_stopped_by_the_address_limit_in_every_process(overrides):
    limits = {"REQUEST_RATE_LIMIT": "5 per minute", "REQUEST_RATE_LIMIT_PER_ADDRESS": "3 per minute"}
    a = process(overrides, **limits)
    codes = [send(a.test_client()) for _ in range(2)]
    b = process(overrides, **limits)
    codes += [send(b.test_client()) for _ in range(2)]
    assert codes == [303, 303, 303, 429]


def test_each_accepted_post_says_how_many_are_left_in_the_window(overrides):
    """The limit's headers come with every answer of the form, not only with the refusal."""
    app = process(overrides, REQUEST_RATE_LIMIT="3 per minute")
    browser = app.test_client()
    left = []
    for _ in range(3):
        answer = post(browser)
        assert answer.status_code == 303 and answer.headers["X-RateLimit-Limit"] == "3"
        left.append(answer.headers["X-RateLimit-Remaining"])
    assert left == ["2", "1", "0"]


def test_a_refused_person_can_send_again_once_the_window_has_passed(overrides):
    app = process(overrides, REQUEST_RATE_LIMIT="1 per minute")
    clock = app.extensions["peerline"].clock
    clock.pin(datetime(2026, 3, 2, 14, 0, tzinfo=timezone.utc))
    browser = app.test_client()
    assert [send(browser), send(browser)] == [303, 429]
    clock.advance(timedelta(seconds=61))
    assert send(browser) == 303


def test_the_refusal_is_kind_puts_988_first_and_keeps_nothing_typed(overrides):
    app = process(overrides, REQUEST_RATE_LIMIT="1 per minute")
    browser = app.test_client()
    send(browser)
    html = browser.get("/request").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]*)"', html).group(1)
    page = browser.post("/request", data={**GOOD, "csrf_token": token})
    text = page.get_data(as_text=True)
    assert page.status_code == 429 and page.mimetype == "text/html"
    assert "988" in text and text.index("988") < text.index("<h1")
    assert "not sent yet" in text and "few minutes" in text and "call or text" in text
    assert "go away" not in text.lower()
    assert "Zebulon" not in text and "0123" not in text and "Surgery" not in text
    assert "Location" not in page.headers and int(page.headers["Retry-After"]) > 0


def test_a_limit_that_cannot_be_read_stops_the_start_naming_the_setting(overrides):
    with pytest.raises(SettingsError, match="REQUEST_RATE_LIMIT_PER_ADDRESS"):
        process(overrides, REQUEST_RATE_LIMIT_PER_ADDRESS="lots")


def test_the_sql_counter_is_atomic_under_concurrent_processes(tmp_path):
    from web.ratelimit import SqlStorage
    url = f"sqlite:///{tmp_path / 'counts.db'}"
    stores = [SqlStorage("peerline+sql://", database_url=url) for _ in range(2)]
    seen = []

    def hit(store):
        for _ in range(10):
            seen.append(store.incr("k", 60))

    threads = [threading.Thread(target=hit, args=(stores[n % 2],)) for n in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(seen) == list(range(1, 41)) and stores[0].get("k") == 40
