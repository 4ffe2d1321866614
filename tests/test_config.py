"""Program rules are checked when the service starts: the shipped files load, and an unknown key
or a bad value stops the start with a message naming the file, the key and the reason."""
from __future__ import annotations

import dataclasses
import tomllib

import pytest

from config import messages, program, settings
from config.vocabulary import REQUEST_FIELDS, TRUE_WORDS, is_true
from workflows.model import Request

SHIPPED = settings.ROOT / "config" / "program.toml"


def shipped_with(tmp_path, old: str, new: str):
    """A copy of the shipped program.toml with one line changed."""
    text = SHIPPED.read_text()
    assert old in text
    path = tmp_path / "program.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_the_shipped_files_load_with_their_values():
    rules = program.load(SHIPPED)
    assert rules.program.name == "Clinician Peer Support Network"
    assert rules.program.tz.key == "America/New_York"
    assert rules.offers.link_valid_hours == 72 and rules.review.window_hours == 72
    assert rules.institutions["RRMC"] == "Riverside Regional Medical Center"
    assert "Nurse" in rules.roles.choices
    assert [r.name for r in rules.crisis.resources][0] == "Employee Assistance Program"
    templates = messages.load(settings.ROOT / "config" / "messages.toml")
    assert templates["offer_supporter_sms"].channel == "sms"


def test_a_missing_section_takes_the_defaults():
    rules = program.parse({"program": {"name": "P"}})
    assert rules.offers.expiry_hours == 4 and rules.matching.suggestions == 3
    assert rules.program.timezone == "UTC" and rules.quiet_hours.window is None


@pytest.mark.parametrize("old,new,expected", [
    ("link_valid_hours = 72", "link_valid_hours = 0", "[offers] link_valid_hours: must be > 0"),
    ("link_valid_hours = 72", "link_valid_hours = -3", "[offers] link_valid_hours: must be > 0"),
    ("link_valid_hours = 72", 'link_valid_hours = "three days"', "[offers] link_valid_hours: Input should be a valid number"),
    ("window_hours = 72", "window_hours = [72]", "[review] window_hours: Input should be a valid number"),
    ('timezone = "America/New_York"', 'timezone = "America/Gotham"', "[program] timezone: unknown time zone 'America/Gotham'"),
    ('start = "21:00"', 'start = "9pm"', '[quiet_hours] start and end must be times like "21:00"'),
    ('start = "21:00"', 'start = "25:00"', '[quiet_hours] start and end must be times like "21:00"'),
    ("rest_days = 14", "rest_days = 0", "[matching] rest_days: must be > 0"),
    ("idle_minutes = 30", "idle_minutes = 30\nidle_minutes_typo = 5", "[console] idle_minutes_typo: unknown key"),
    ("link_valid_hours = 72", "link_valid_hour = 72", "[offers] link_valid_hour: unknown key"),
    ("[console]", "[consoles]", "[consoles] unknown key"),
    ('phone = "+1 800 555 0142"', 'phone_number = "+1 800 555 0142"', "[crisis.resources.0] phone_number: unknown key"),
])
def test_a_wrong_key_or_value_stops_the_start_naming_file_key_and_reason(tmp_path, old, new, expected):
    with pytest.raises(program.ProgramError) as err:
        program.load(shipped_with(tmp_path, old, new))
    assert str(err.value).startswith(f"{tmp_path / 'program.toml'}: ")
    assert expected in str(err.value)


def test_every_problem_is_named_at_once(tmp_path):
    path = shipped_with(tmp_path, "expiry_hours = 4", "expiry_hours = -1\nexpiry_minutes = 5")
    message = str(pytest.raises(program.ProgramError, program.load, path).value)
    assert "[offers] expiry_hours: must be > 0" in message and "[offers] expiry_minutes: unknown key" in message


def test_an_unreadable_file_names_itself(tmp_path):
    path = tmp_path / "program.toml"
    path.write_text("[offers\n")
    with pytest.raises(program.ProgramError, match="program.toml: "):
        program.load(path)


def test_the_service_does_not_start_with_a_misspelt_program_key(tmp_path, overrides):
    from app import create_app
    path = shipped_with(tmp_path, "link_valid_hours = 72", "link_valid_hour = 72")
    with pytest.raises(program.ProgramError, match=r"\[offers\] link_valid_hour: unknown key"):
        create_app({**overrides, "PROGRAM_FILE": str(path)})


def test_a_template_with_an_unknown_key_stops_the_start(tmp_path):
    path = tmp_path / "messages.toml"
    path.write_text('[a]\nchannel = "sms"\nbody = "ref {ref}"\nsubjet = "x"\n')
    with pytest.raises(messages.TemplateError, match=r"\[a\] subjet: unknown key"):
        messages.load(path)


def test_forms_answer_in_the_request_fields():
    assert set(REQUEST_FIELDS) == {f.name for f in dataclasses.fields(Request)} | {"crisis"}


@pytest.mark.parametrize("word", sorted(TRUE_WORDS) + ["Yes", " TRUE ", "On"])
def test_one_set_of_yes_words(word):
    assert is_true(word)


@pytest.mark.parametrize("word", ["", "no", "0", "false", "off", None, "maybe"])
def test_anything_else_is_no(word):
    assert not is_true(word)


def test_the_shipped_form_mappings_fit_the_program(ctx):
    from integrations import qualtrics, redcap
    assert qualtrics.load_form(ctx.program).answers
    assert redcap.load_form(ctx.program).answers
    assert tomllib.loads((settings.ROOT / "config" / "forms" / "qualtrics.toml").read_text())["survey"]["ids"]


@pytest.mark.parametrize("form,body,says", [
    ("qualtrics", '[survey]\nids = ["SV_x"]\n[answers.role]\nquestoin = "QID8"\n',
     ["[answers.role] questoin: unknown key (misspelt?)", "[answers.role] question: missing"]),
    ("qualtrics", '[survey]\nids = []\n[answers.role]\nquestion = "QID8"\n', ["[survey] ids:"]),
    ("redcap", '[project]\ninstrument = "Peer Support"\n[answers.role]\nfield = "role"\n',
     ["[project] instrument: must be the instrument's unique name"]),
    ("redcap", '[project]\ninstrument = "psr"\n[answers.role]\nfield = "role"\ncheckbox = true\n',
     ["[answers] role: a checkbox needs choices"]),
])
def test_a_form_mapping_with_a_wrong_key_or_value_stops_the_start_naming_file_and_key(tmp_path, form, body, says):
    from config import forms
    path = tmp_path / f"{form}.toml"
    path.write_text(body)
    with pytest.raises(forms.FormConfigError) as err:
        (forms.load_qualtrics if form == "qualtrics" else forms.load_redcap)(path)
    assert str(err.value).startswith(str(path))
    for said in says:
        assert said in str(err.value)
