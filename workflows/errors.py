"""How a step failed, and how a failure is told: ids and types only.

Its own module so that every workflow (intake, offers, deadlines) and every integration that
fetches answers can use it without importing each other.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable


class TransientError(RuntimeError):
    """An outside system could not answer now; the submission is retried later.
    The message must hold ids only: it is shown by `flask inbox list`."""


class PermanentError(RuntimeError):
    """Retrying cannot help (a revoked token, a deleted record): park the row at once for a
    person to fix and replay. The message must hold ids only."""


class CredentialsRefused(PermanentError):
    """An outside form system refused our API token (HTTP 401/403). Integrations report it;
    the intake workflow parks the row and tells the program leads which system refused."""

    def __init__(self, source: str, message: str):
        super().__init__(message)
        self.source = source


class DuplicateRows(PermanentError):
    """The case store holds several rows for one key (Airtable answered an upsert 422 because
    its merge field matched more than one record: an earlier race, or a coordinator's copy and
    paste). Retrying cannot help and must not add a third row: the submission is parked at once
    and the program leads are told which rows to merge. Ids only."""

    def __init__(self, table: str, key_field: str, key: str, case_ids: list[str]):
        self.table, self.key_field, self.key, self.case_ids = table, key_field, key, list(case_ids)
        super().__init__(f"duplicate rows in Airtable: {len(self.case_ids)} rows of {table} have "
                         f"{key_field} {key} (Case IDs {', '.join(self.case_ids) or 'blank'})")


def describe_error(exc: Exception) -> str:
    """An error as ids and types only: exception messages from outside clients can quote
    request data, so only the type and an HTTP status (when there is one) are kept."""
    if isinstance(exc, TransientError):
        return f"TransientError: {exc}"
    if isinstance(exc, PermanentError):
        return f"PermanentError: {exc}"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return type(exc).__name__ + (f" (HTTP {status})" if status else "")


def each_case(ctx, cases: Iterable, step: Callable[..., int], log: logging.Logger, job: str) -> int:
    """`step(ctx, case)` for every case of a periodic job, adding up what each returns. One
    case's failure is logged (the Case ID, the step, the error's type and ids) and does not stop
    the others; the job's next run tries that case again."""
    done = 0
    for case in cases:
        try:
            done += step(ctx, case)
        except Exception as exc:
            log.error("%s failed case=%s step=%s error=%s", job, case.case_id, step.__name__, describe_error(exc))
    return done
