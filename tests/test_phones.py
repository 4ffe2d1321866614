"""One rule for phone numbers (workflows/phones.py): the form, intake, the roster, matching and
SMS all read a number the same way, with the phonenumbers library."""
from __future__ import annotations

import pytest

from config.program import Program
from workflows import phones


@pytest.mark.parametrize("raw,number", [("+1 555 010 1125", "+15550101125"), ("(555) 010-1125", "+15550101125"),
                                        ("1-555-010-1125", "+15550101125"), ("+44 20 7946 0958", "+442079460958"),
                                        ("0044 20 7946 0958", "+442079460958"), ("", ""), ("n/a", "")])
def test_phone_numbers_compare_in_one_form(raw, number):
    assert phones.e164(raw) == number


@pytest.mark.parametrize("raw", ["12345", "555 010 123", "555 O1O 1234", "call me", "555 010 1234 or 555 010 9999",
                                 "+1 555 010 11255"])
def test_what_cannot_be_called_or_texted_is_no_number(raw):
    assert phones.e164(raw) == "" and not phones.is_phone(raw)


def test_numbers_without_a_country_code_are_read_in_the_programs_region():
    assert phones.region(Program.model_validate({"program": {"name": "P"}})) == "US"
    british = Program.model_validate({"program": {"name": "P", "phone_region": "gb"}})
    assert phones.region(british) == "GB"
    assert phones.e164("020 7946 0958", phones.region(british)) == "+442079460958"
    assert phones.e164("020 7946 0958") == ""      # not a US number
