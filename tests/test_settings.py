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
