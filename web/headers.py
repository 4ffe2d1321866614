"""Response headers shared by our pages."""


def private(response):
    """A page holding something for one person (contact details, a private link's content):
    never cached, never sent on as a referrer, never indexed, never framed."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers["X-Frame-Options"] = "DENY"
    return response
