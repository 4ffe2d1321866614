"""Reading a configuration file into a typed model, with errors people can act on.

Every data file under config/ goes through `load_toml` + `validate`: an unreadable file, an
unknown (or misspelt) key, or a bad value stops the start with one message naming the file,
each key and the reason, e.g. `config/program.toml: [offers] link_valid_hours: must be > 0`.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

ROOT = Path(__file__).resolve().parent.parent

M = TypeVar("M", bound=BaseModel)

class ConfigError(ValueError):
    """A configuration file is unreadable or holds a key or value Peerline cannot use."""


class Section(BaseModel):
    """A part of a configuration file: unknown keys are refused, values are not changed
    after the start."""
    model_config = ConfigDict(extra="forbid", frozen=True)


def shown(path: str | os.PathLike) -> str:
    """A file's name as people read it: relative to the checkout when inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def load_toml(path: str | os.PathLike, error: type[ConfigError] = ConfigError) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise error(f"{shown(path)}: {exc}") from None


def validate(model: type[M], data: object, source: str, error: type[ConfigError] = ConfigError) -> M:
    """`data` as `model`, or `error` naming `source` and every problem found."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{source}: " + "; ".join(_describe(e) for e in exc.errors())) from None


_REASONS = {
    "extra_forbidden": lambda e: "unknown key (misspelt?)",
    "missing": lambda e: "missing",
    "greater_than": lambda e: f"must be > {e['ctx']['gt']:g}",
    "greater_than_equal": lambda e: f"must be >= {e['ctx']['ge']:g}",
}


def _describe(err: dict) -> str:
    loc = [str(part) for part in err["loc"] if part != "root"]
    reason = _REASONS.get(err["type"], lambda e: e["msg"].removeprefix("Value error, "))(err)
    if not loc:
        return reason
    if len(loc) == 1:
        # A whole section (a model-wide check), or a top-level key.
        return f"[{loc[0]}] {reason}"
    return f"[{'.'.join(loc[:-1])}] {loc[-1]}: {reason}"
