"""Whether an outside form's answer mapping (config.forms) fits Peerline's request fields and
the program's choices, so a mapping that does not fit stops the start with a message naming
each problem."""
from __future__ import annotations

from typing import TYPE_CHECKING

from config.forms import FormConfigError  # noqa: F401 (what callers catch)
from config.vocabulary import REQUEST_FIELDS

if TYPE_CHECKING:
    from config.forms import QualtricsForm, RedcapForm
    from config.program import Program


def answer_errors(form: QualtricsForm | RedcapForm, program: Program) -> list[str]:
    """Problems with [answers]: unknown request fields, and choices the program does not have."""
    errors, request_fields = [], set(REQUEST_FIELDS)
    for name, spec in form.answers.items():
        if name not in request_fields:
            errors.append(f"[answers.{name}] is not a request field ({', '.join(sorted(request_fields))})")
            continue
        allowed = program.allowed_values(name)
        for code, value in spec.choices.items():
            if allowed is not None and value not in allowed:
                errors.append(f"[answers.{name}] choice {code} = {value!r} is not one of {', '.join(allowed)}")
    return errors
