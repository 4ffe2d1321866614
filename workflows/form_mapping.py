"""The answer mappings of outside forms (config/forms/qualtrics.toml, redcap.toml): read once,
and checked against Peerline's request fields and the program's choices, so a mapping that
does not fit stops the start with a message naming each problem."""
from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Callable

from config.program import Program
from config.vocabulary import REQUEST_FIELDS


class FormConfigError(ValueError):
    """A form mapping is unreadable or does not fit config/program.toml."""


@functools.cache
def read(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FormConfigError(f"{path}: {exc}") from None


def answer_errors(form: dict, program: Program, *, key: str, valid_key: Callable[[str], bool],
                  key_hint: str) -> list[str]:
    """Problems with [answers]: unknown request fields, a missing or malformed question key
    (`key`, e.g. "question" or "field"), and choices the program does not have."""
    answers, errors = form.get("answers"), []
    request_fields = set(REQUEST_FIELDS)
    if not isinstance(answers, dict) or not answers:
        return ["[answers] is empty"]
    for name, spec in answers.items():
        if name not in request_fields:
            errors.append(f"[answers.{name}] is not a request field ({', '.join(sorted(request_fields))})")
            continue
        if not isinstance(spec, dict) or not isinstance(spec.get(key), str) or not valid_key(spec[key]):
            errors.append(f"[answers.{name}] needs {key} = \"{key_hint}\"")
            continue
        if spec.get("checkbox") and not spec.get("choices"):
            errors.append(f"[answers.{name}] is a checkbox without choices")
        allowed = program.allowed_values(name)
        for code, value in (spec.get("choices") or {}).items():
            if allowed is not None and value not in allowed:
                errors.append(f"[answers.{name}] choice {code} = {value!r} is not one of {', '.join(allowed)}")
    return errors
