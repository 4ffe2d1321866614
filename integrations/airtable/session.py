"""The HTTP session pyairtable uses: every request paced by the Throttle, a 429 waited out,
server errors and lost connections retried when sending the request again is safe.

The retry loop is tenacity's. pyairtable's own `retry_strategy` (a urllib3 `Retry` on the
session's adapter) does not fit: it retries inside urllib3, below the Throttle, so a retry
would skip the shared pace and a 429 could not hold back the other processes for Airtable's
30 s; its sleeps cannot be injected (tests would wait the 30 s); and a read timeout that uses
up its retries reaches the caller as `requests.ConnectionError` instead of `requests.Timeout`.
"""
from __future__ import annotations

import logging

import requests
import tenacity

from integrations.airtable.pacing import RATE_LIMIT_WAIT_SECONDS, Throttle
from integrations._metrics import count_airtable

log = logging.getLogger("peerline.airtable")

#: A request is sent again at most this many times, whatever went wrong (a 429, a 5xx, a lost
#: connection); then the error goes to the caller, and the inbox retries the work later.
RETRIES = 3
SERVER_ERRORS = (500, 502, 503, 504)
#: Backoff before resending after a server error or a lost connection: 1, 2, 4 s, plus up
#: to a quarter second so that workers do not come back in step. A 429 waits in the Throttle.
BACKOFF = tenacity.wait_exponential(multiplier=1) + tenacity.wait_random(0, 0.25)


class ThrottledSession(requests.Session):
    """The session pyairtable sends through, with our pacing and retry policy in place of its
    own (which retries a 429 for about 3 s in all, far short of Airtable's 30 s penalty)."""

    def __init__(self, base_id: str, throttle: Throttle, *, retries: int = RETRIES):
        super().__init__()
        self.base_id, self.throttle, self.retries = base_id, throttle, retries

    def request(self, method, url, *args, **kwargs):
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_result(_worth_repeating) | tenacity.retry_if_exception(_error_worth_repeating),
            stop=tenacity.stop_after_attempt(1 + self.retries),
            wait=_wait,
            sleep=self._sleep,
            before_sleep=self._before_retry,
            retry_error_callback=lambda state: state.outcome.result(),   # the last answer, or its error
        )
        return retrying(self._attempt, method, url, *args, **kwargs)

    def _attempt(self, method, url, *args, **kwargs):
        with self.throttle.request(self.base_id):     # held until the whole answer is read
            try:
                response = super().request(method, url, *args, **kwargs)
            except Exception:
                count_airtable("error")
                raise
        count_airtable(response.status_code)      # /metrics: requests and 429s, by status
        return response

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.throttle.sleep(seconds)      # read now: tests swap the throttle's sleep

    def _before_retry(self, state: tenacity.RetryCallState) -> None:
        if state.outcome.failed:
            what = type(state.outcome.exception()).__name__
        else:
            response = state.outcome.result()
            response.close()
            if response.status_code == 429:
                log.warning("airtable 429 base=%s: waiting %ss before retry %d",
                            self.base_id, int(RATE_LIMIT_WAIT_SECONDS), state.attempt_number)
                self.throttle.penalize(self.base_id, RATE_LIMIT_WAIT_SECONDS)
                return
            what = f"HTTP {response.status_code}"
        log.warning("airtable %s base=%s: retry %d in %.1fs", what, self.base_id, state.attempt_number,
                    state.upcoming_sleep)


def _wait(state: tenacity.RetryCallState) -> float:
    """After a 429 the Throttle holds every process back (penalize); else back off."""
    rate_limited = not state.outcome.failed and state.outcome.result().status_code == 429
    return 0.0 if rate_limited else BACKOFF(state)


def _worth_repeating(response: requests.Response) -> bool:
    if response.status_code == 429:       # refused before anything was done: any request may go again
        return True
    return response.status_code in SERVER_ERRORS and _may_repeat(response.request, None)


def _error_worth_repeating(exc: BaseException) -> bool:
    return isinstance(exc, (requests.ConnectionError, requests.Timeout)) \
        and getattr(exc, "request", None) is not None and _may_repeat(exc.request, exc)


def _may_repeat(request: requests.PreparedRequest, exc: Exception | None) -> bool:
    """Reads and upserts are safe to send twice; a plain create (POST) only when it surely
    never reached Airtable, so an event is not written twice."""
    if request.method.upper() != "POST" or str(request.url).split("?", 1)[0].endswith("/listRecords"):
        return True
    return isinstance(exc, requests.ConnectTimeout)
