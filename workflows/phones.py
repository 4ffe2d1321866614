"""Phone numbers: the one rule for reading them, wherever one comes in (the request form, an
outside survey, the roster, an SMS's sender) and wherever two are compared.

A number is read with Google's libphonenumber (the `phonenumbers` package) in the program's
region (`program.toml` [program] `phone_region`, US when not set), so "(555) 010-1125",
"1-555-010-1125" and "+1 555 010 1125" are one number, kept in E.164 ("+15550101125"), the
form SMS providers take. A number is accepted when it is *possible* (the right length for
its country), not only when it is *valid* (in a range that is assigned): the fictional
555-01XX numbers the sample roster and the tests use are possible but not assigned.
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import phonenumbers

if TYPE_CHECKING:
    from config.program import Program

#: Numbers without a country code are read as this region's unless the program says otherwise.
DEFAULT_REGION = "US"


def region(program: Program) -> str:
    """The program's region for numbers written without a country code (ISO 3166 code)."""
    return (program.program.phone_region or DEFAULT_REGION).upper()


@lru_cache(maxsize=4096)
def e164(raw: str, region: str = DEFAULT_REGION) -> str:
    """`raw` as E.164 ("+15550101125"), or "" when it is not a phone number that could be
    called or texted (empty, too short or too long, letters instead of digits)."""
    text = (raw or "").strip()
    if text.startswith("00"):
        text = "+" + text[2:]   # the international prefix dialled in most of the world
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return ""
    if not phonenumbers.is_possible_number(number):
        return ""
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_phone(raw: str, region: str = DEFAULT_REGION) -> bool:
    """Whether `raw` reads as a phone number (see `e164`)."""
    return bool(e164(raw, region))
