"""Settings: every key documented, missing companions stop the start with a clear message."""
from __future__ import annotations

import re

import pytest

from config import settings


def test_env_example_lists_every_setting():
    listed = set(re.findall(r"^([A-Z_]+)=", (settings.ROOT / ".env.example").read_text(), re.M))
    assert listed == set(settings.DEFAULTS)


def test_readme_names_every_setting():
    readme = (settings.ROOT / "README.md").read_text()
    assert [k for k in settings.DEFAULTS if f"`{k}`" not in readme] == []


def test_a_half_configured_backend_stops_the_start_naming_what_is_missing(tmp_path):
    with pytest.raises(settings.SettingsError) as err:
        settings.load({"DATA_DIR": str(tmp_path), "TWILIO_ACCOUNT_SID": "AC" + "0" * 32})
    assert "Twilio SMS needs TWILIO_AUTH_TOKEN" in str(err.value)
    assert ".env.example" in str(err.value)


def test_a_shared_database_needs_an_explicit_secret_key(tmp_path):
    with pytest.raises(settings.SettingsError, match="SECRET_KEY"):
        settings.load({"DATA_DIR": str(tmp_path), "DATABASE_URL": "postgresql://x@127.0.0.1/y"})


def test_embedded_secret_key_is_kept_so_processes_agree(tmp_path):
    first = settings.load({"DATA_DIR": str(tmp_path)})["SECRET_KEY"]
    second = settings.load({"DATA_DIR": str(tmp_path)})["SECRET_KEY"]
    assert first == second and len(first) > 40


def test_platform_postgres_urls_get_the_driver_named():
    assert settings.database_url({"DATABASE_URL": "postgres://u:p@h/db"}) == "postgresql+psycopg://u:p@h/db"


def test_every_process_builds_links_to_the_port_the_web_server_listens_on(tmp_path):
    """`make run PORT=5077`: honcho gives the worker another PORT and a CLI in another shell has
    none; both must still name the address the web server really serves."""
    import os
    import socket
    import subprocess
    import sys
    import time
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in settings.DEFAULTS}
    env.update(DATA_DIR=str(tmp_path / "var"), SECRET_KEY="s")
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    web = subprocess.Popen([gunicorn, "-c", "config/gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
                            "--workers", "1", "app:create_app()"], cwd=settings.ROOT, env={**env, "PORT": str(port)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        recorded = tmp_path / "var" / settings.SERVED_URL_FILE
        deadline = time.monotonic() + 30
        while not recorded.exists() and time.monotonic() < deadline and web.poll() is None:
            time.sleep(0.1)
        worker_side = subprocess.run(
            [sys.executable, "-c", "from config import settings; print(settings.load()['PUBLIC_BASE_URL'])"],
            cwd=settings.ROOT, env={**env, "PORT": str(port + 100)}, capture_output=True, text=True, timeout=60)
        assert worker_side.stdout.strip() == f"http://localhost:{port}"
    finally:
        web.terminate()
        web.wait(timeout=30)


def test_a_configured_public_url_wins_over_the_served_address(tmp_path):
    (tmp_path / settings.SERVED_URL_FILE).write_text("http://localhost:5077\n")
    assert settings.load({"DATA_DIR": str(tmp_path)})["PUBLIC_BASE_URL"] == "http://localhost:5077"
    assert settings.load({"DATA_DIR": str(tmp_path), "PUBLIC_BASE_URL": "https://peer.example.org/"}
                         )["PUBLIC_BASE_URL"] == "https://peer.example.org"
