"""Bearer tokens on an HTTP port (``[http] tokens``): who may read the live view, the tail
stream and (with ``metrics_auth``) the metrics.

With no token configured everything is open, as before. With tokens:

- ``/healthz`` and ``/readyz`` stay open (orchestrators probe them), and ``/metrics`` unless
  ``metrics_auth``;
- everything else needs ``Authorization: Bearer <token>``, or the cookie the page gets;
- a browser opening ``/`` (or ``/live``) without a token gets a small sign-in form; posting a
  right token to ``/login`` (or opening ``/?token=<token>`` once) sets an ``HttpOnly``,
  ``SameSite=Strict`` cookie and redirects to the page, whose requests then carry it.

Tokens are compared with :func:`hmac.compare_digest`, against every configured token, and
never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from yarl import URL

#: The cookie that carries a browser's token.
COOKIE = "telemetry_token"
#: Paths that never need a token.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
#: Paths a browser opens: without a token they answer with the sign-in form.
PAGE_PATHS = frozenset({"/", "/live"})
LOGIN_PATH = "/login"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_LOGIN_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>telemetry · sign in</title>
<style>body{{font:14px system-ui,sans-serif;margin:3rem auto;max-width:24rem}}
input{{font:inherit;padding:.3rem;width:100%;box-sizing:border-box;margin:.4rem 0}}
.bad{{color:#c0392b}}</style></head>
<body><h1>telemetry · live</h1>{message}
<form method="post" action="/login"><label>Token
<input type="password" name="token" autocomplete="current-password" autofocus required></label>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button></form></body></html>
"""


class HttpAuth:
    """The token check of one HTTP port (``tokens`` empty: everything open)."""

    def __init__(
        self,
        tokens: Sequence[str],
        *,
        metrics_auth: bool = False,
        refused: Callable[[], None] | None = None,
    ) -> None:
        self._tokens = [token.encode() for token in tokens]
        self.metrics_auth = metrics_auth
        self._refused = refused

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def valid(self, candidate: str | None) -> bool:
        """True when ``candidate`` is one of the tokens (compared in constant time)."""
        if candidate is None:
            return False
        given = candidate.encode("utf-8", "replace")
        found = False
        for token in self._tokens:
            found |= hmac.compare_digest(given, token)
        return found

    def headers(self) -> dict[str, str]:
        """Headers that authenticate a call to a port with the same tokens (the workers)."""
        return {"Authorization": "Bearer " + self._tokens[0].decode()} if self._tokens else {}

    def needs_token(self, path: str) -> bool:
        if not self._tokens or path in OPEN_PATHS:
            return False
        return path != "/metrics" or self.metrics_auth

    @staticmethod
    def presented(request: web.Request) -> str | None:
        """The token ``request`` carries: its bearer token, else its cookie."""
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return request.cookies.get(COOKIE)

    def add_to(self, app: web.Application) -> None:
        """Install the check (a middleware) and the sign-in route."""
        app.middlewares.append(self.middleware)
        app.router.add_post(LOGIN_PATH, self.login)

    @web.middleware
    async def middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        path = request.path
        if path == LOGIN_PATH or not self.needs_token(path):
            return await handler(request)
        if path in PAGE_PATHS and "token" in request.query:
            if self.valid(request.query["token"]):
                rest = {k: v for k, v in request.query.items() if k != "token"}
                location = str(URL(path).with_query(rest))
                return self._signed_in(location, request.query["token"])
            return self._denied(request, "That token is not valid.")
        if self.valid(self.presented(request)):
            return await handler(request)
        return self._denied(request)

    async def login(self, request: web.Request) -> web.StreamResponse:
        """``POST /login`` from the sign-in form: the cookie, and back to the page."""
        if not self._tokens:
            raise web.HTTPNotFound()
        form = await request.post()
        token = form.get("token")
        target = form.get("next")
        target = target if isinstance(target, str) and target in PAGE_PATHS else "/"
        if isinstance(token, str) and self.valid(token):
            return self._signed_in(target, token)
        return self._denied(request, "That token is not valid.", next_path=target)

    @staticmethod
    def _signed_in(location: str, token: str) -> web.StreamResponse:
        response = web.Response(status=303, headers={"Location": location})
        response.set_cookie(COOKIE, token, path="/", httponly=True, samesite="Strict")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def _denied(
        self, request: web.Request, message: str = "", *, next_path: str | None = None
    ) -> web.StreamResponse:
        if self._refused is not None:
            self._refused()
        path = next_path or request.path
        if path in PAGE_PATHS and request.method in ("GET", "POST"):
            note = f'<p class="bad">{message}</p>' if message else ""
            return web.Response(
                status=401,
                text=_LOGIN_PAGE.format(message=note, next=path),
                content_type="text/html",
                headers={
                    "Content-Security-Policy": _LOGIN_CSP,
                    "X-Content-Type-Options": "nosniff",
                    "Cache-Control": "no-store",
                    "WWW-Authenticate": 'Bearer realm="telemetry"',
                },
            )
        return web.Response(
            status=401,
            text="unauthorized: send Authorization: Bearer <token> (one of [http] tokens)\n",
            headers={"WWW-Authenticate": 'Bearer realm="telemetry"'},
        )
