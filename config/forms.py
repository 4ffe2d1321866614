"""The answer mappings of the outside forms (config/forms/qualtrics.toml, redcap.toml) as typed
objects: read once, and an unknown key, a missing question id or a bad value stops the start
with the file, the key and the reason (like program.toml). Whether the mapped fields and
choices fit Peerline's request and the program is checked in `workflows.form_mapping`."""
from __future__ import annotations

import functools
import os
import re

from pydantic import Field, field_validator, model_validator

from config._load import ConfigError, Section, load_toml, shown, validate

#: A REDCap variable or instrument name: lower case letters, digits and underscores.
REDCAP_NAME = re.compile(r"[a-z][a-z0-9_]*")


class FormConfigError(ConfigError):
    """A form mapping is unreadable or does not fit config/program.toml."""


class Answer(Section):
    """[answers.<request field>]: `choices` maps a form's code to Peerline's value; without
    choices the answer is taken as text."""
    choices: dict[str, str] = Field(default_factory=dict)

    @field_validator("choices", mode="before")
    @classmethod
    def _codes_as_text(cls, value):
        return {str(code): choice for code, choice in value.items()} if isinstance(value, dict) else value


class QualtricsAnswer(Answer):
    #: The key in the response's `values`: QIDn, QIDn_TEXT, or an embedded data field's name.
    question: str = Field(min_length=1)


class RedcapAnswer(Answer):
    #: The REDCap variable name.
    field: str
    #: A checkbox field, exported as one `<field>___<code>` column per choice.
    checkbox: bool = False
    #: The project may leave this question out (`redcap check` does not ask for it).
    optional: bool = False

    @field_validator("field")
    @classmethod
    def _variable_name(cls, value: str) -> str:
        if not REDCAP_NAME.fullmatch(value):
            raise ValueError("must be a REDCap variable name (lower case letters, digits, _)")
        return value

    @model_validator(mode="after")
    def _checkbox_has_choices(self) -> "RedcapAnswer":
        if self.checkbox and not self.choices:
            raise ValueError("a checkbox needs choices")
        return self


class QualtricsSurvey(Section):
    #: The survey ids (SV_...) whose notices are accepted.
    ids: list[str] = Field(min_length=1)


class QualtricsForm(Section):
    survey: QualtricsSurvey
    answers: dict[str, QualtricsAnswer] = Field(min_length=1)


class RedcapProject(Section):
    #: The instrument (its unique name) whose completion makes a case.
    instrument: str

    @field_validator("instrument")
    @classmethod
    def _instrument_name(cls, value: str) -> str:
        if not REDCAP_NAME.fullmatch(value):
            raise ValueError("must be the instrument's unique name (lower case letters, digits, _)")
        return value


class RedcapForm(Section):
    project: RedcapProject
    answers: dict[str, RedcapAnswer] = Field(min_length=1)


@functools.cache
def load_qualtrics(path: str | os.PathLike) -> QualtricsForm:
    return validate(QualtricsForm, load_toml(path, FormConfigError), shown(path), FormConfigError)


@functools.cache
def load_redcap(path: str | os.PathLike) -> RedcapForm:
    return validate(RedcapForm, load_toml(path, FormConfigError), shown(path), FormConfigError)
