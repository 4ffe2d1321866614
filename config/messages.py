"""Every SMS and email text (config/messages.toml) as checked templates.

`load(path)` reads the file when a process starts. Each template names its channel and may use
only the placeholders that channel may carry (docs/architecture.md section 7); a template
that breaks this, an unknown key, or a malformed body stops the start with a message naming
the file, the template and the reason. Every broken template is named at once.
"""
from __future__ import annotations

import os
import string
from typing import TypeAlias

from pydantic import RootModel, model_validator

from config._load import ConfigError, Section, load_toml, shown, validate

#: What each channel's templates may say (docs/architecture.md section 7). Every value here is a
#: reference, a time, a link, a fixed word or the program's own text: never a name, contact
#: detail, unit or free text from a request.
ALLOWED_PLACEHOLDERS = {
    "sms": {"ref", "deadline", "link", "program", "crisis_resources"},
    "email": {"ref", "deadline", "link", "program", "crisis_resources", "institution", "urgency", "role",
              "recipient_role", "channel", "supporter",
              # ids for the program leads' "duplicate rows" email: Case IDs and a form's response id
              "case_ids", "source_response_id"},
}
# `supporter` is a supporter's roster name, for the program lead's email after a hard check-in
# (workflows/wellbeing.py): staff, never the requester.


class TemplateError(ConfigError):
    """A template breaks the confidentiality rules or is malformed."""


def _fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}


class Template(Section):
    """One [name] of messages.toml. Bodies and subjects are Python str.format strings."""
    name: str
    channel: str
    body: str = ""
    subject: str = ""

    @model_validator(mode="after")
    def _safe(self) -> "Template":
        if self.channel not in ALLOWED_PLACEHOLDERS:
            raise ValueError(f"channel must be one of {sorted(ALLOWED_PLACEHOLDERS)}, not {self.channel!r}")
        if not self.body:
            raise ValueError("has no body")
        errors = []
        if self.channel == "email" and not self.subject:
            errors.append("is an email without a subject")
        allowed = ALLOWED_PLACEHOLDERS[self.channel]
        for part in ("subject", "body"):
            try:
                used = _fields(getattr(self, part))
            except ValueError as exc:
                errors.append(f"{part}: {exc}")
                continue
            bad = sorted(used - allowed)
            if bad:
                errors.append(f"{part} uses {', '.join('{' + b + '}' for b in bad)}, "
                              f"which a {self.channel} may not carry: messages name no person, contact "
                              f"detail, unit or free text (allowed in {self.channel}: {', '.join(sorted(allowed))})")
        if errors:
            raise ValueError(f"; [{self.name}] ".join(errors))
        return self

    @property
    def fields(self) -> set[str]:
        return _fields(self.subject) | _fields(self.body)

    def render(self, values: dict) -> tuple[str, str]:
        return self.subject.format(**values), self.body.format(**values)


#: The templates by name, as the Context holds them.
Templates: TypeAlias = dict[str, Template]


class Messages(RootModel[dict[str, Template]]):
    """config/messages.toml: template name -> template."""

    @model_validator(mode="before")
    @classmethod
    def _named(cls, data):
        if isinstance(data, dict):
            return {name: {**spec, "name": name} if isinstance(spec, dict) else spec for name, spec in data.items()}
        return data


def parse(data: dict, source: str = "config/messages.toml") -> Templates:
    return validate(Messages, data, source, TemplateError).root


def load(path: str | os.PathLike) -> Templates:
    """Read and check config/messages.toml."""
    return parse(load_toml(path, TemplateError), shown(path))
