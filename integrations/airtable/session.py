"""The HTTP session pyairtable uses: every request paced by the Throttle, 429s waited out,
server errors and lost connections retried when repeating the request is safe."""
from __future__ import annotations

import logging
import random

import requests

from integrations.airtable.pacing import RATE_LIMIT_WAIT_SECONDS, Throttle

log = logging.getLogger("peerline.airtable")

#: 429s waited out per request before giving up (the inbox retries it later).
RATE_LIMIT_RETRIES = 3
#: 5xx answers and connection failures retried per request, with backoff 1, 2, 4 s.
ERROR_RETRIES = 3


class ThrottledSession(requests.Session):
    """The HTTP session pyairtable uses, with our pacing and retry policy in place of its own
    (which retries a 429 for about 3 s in all, far short of Airtable's 30 s penalty)."""

    def __init__(self, base_id: str, throttle: Throttle, *, rate_limit_retries: int = RATE_LIMIT_RETRIES,
                 error_retries: int = ERROR_RETRIES):
        super().__init__()
        self.base_id, self.throttle = base_id, throttle
        self.rate_limit_retries, self.error_retries = rate_limit_retries, error_retries

    def request(self, method, url, *args, **kwargs):
        limited = failed = 0
        while True:
            self.throttle.wait(self.base_id)
            try:
                response = super().request(method, url, *args, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if failed < self.error_retries and _may_repeat(method, url, exc):
                    failed += 1
                    self._back_off(failed, type(exc).__name__)
                    continue
                raise
            if response.status_code == 429 and limited < self.rate_limit_retries:
                limited += 1
                response.close()
                log.warning("airtable 429 base=%s: waiting %ss before retry %d",
                            self.base_id, int(RATE_LIMIT_WAIT_SECONDS), limited)
                self.throttle.penalize(self.base_id, RATE_LIMIT_WAIT_SECONDS)
                continue
            if response.status_code in (500, 502, 503, 504) and failed < self.error_retries \
                    and _may_repeat(method, url, None):
                failed += 1
                response.close()
                self._back_off(failed, f"HTTP {response.status_code}")
                continue
            return response

    def _back_off(self, attempt: int, what: str) -> None:
        delay = 2 ** (attempt - 1) * (1 + random.random() / 4)
        log.warning("airtable %s base=%s: retry %d in %.1fs", what, self.base_id, attempt, delay)
        self.throttle.sleep(delay)


def _may_repeat(method: str, url: str, exc: Exception | None) -> bool:
    """Reads and upserts are safe to send twice; a plain create (POST) only when it surely
    never reached Airtable, so an event is not written twice."""
    if method.upper() != "POST" or str(url).split("?", 1)[0].endswith("/listRecords"):
        return True
    return isinstance(exc, requests.ConnectTimeout)
