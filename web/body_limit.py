"""Every body over MAX_CONTENT_LENGTH is 413 before anything parses it, with or without
Content-Length (issue 15; reliability.md section 7 case 8).

Werkzeug checks a declared Content-Length itself. A chunked body has none: Werkzeug then reads
the stream up to MAX_CONTENT_LENGTH and, in `readall`, silently stops there, so a 3 MB chunked
REDCap trigger was parsed from its first 256 KiB and answered 200. This WSGI middleware reads a
body without Content-Length up to the limit plus one byte (memory stays bounded); over the
limit, the request reaches Flask with an empty body and a mark that makes it a 413 (JSON for
machines, the error page with 988 first for people: web/home.py); within it, the body is handed
on with its real Content-Length.
"""
from __future__ import annotations

import io

from flask import abort, request

#: The environ key that marks a request whose body was over the limit.
TOO_LARGE = "peerline.body_too_large"


class BodyLimit:
    def __init__(self, wsgi_app, max_bytes: int):
        self.wsgi_app, self.max_bytes = wsgi_app, int(max_bytes)

    def __call__(self, environ, start_response):
        if not environ.get("CONTENT_LENGTH") and _may_have_body(environ):
            stream = environ["wsgi.input"]
            chunks, size = [], 0
            while size <= self.max_bytes:
                chunk = stream.read(min(64 * 1024, self.max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > self.max_bytes:
                environ[TOO_LARGE] = True
                body = b""   # the rest is never read
            else:
                body = b"".join(chunks)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.wsgi_app(environ, start_response)


def _may_have_body(environ) -> bool:
    return (environ.get("wsgi.input_terminated") or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()) \
        and environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD", "OPTIONS")


def _refuse_marked() -> None:
    if request.environ.get(TOO_LARGE):
        abort(413)


def init_app(app) -> None:
    app.wsgi_app = BodyLimit(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])
    app.before_request(_refuse_marked)
