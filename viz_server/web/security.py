"""Access token, CSRF protection and security headers.

- Bound to loopback with no token configured: open to local users only.
- Bound elsewhere, or VIZ_SERVER_TOKEN set: every request needs the token, as ``Authorization: Bearer T``
  or once as ``?token=T`` (which marks the browser session as signed in).
- Every HTML form carries a per-session CSRF token; JSON API writes need a Bearer token or an
  ``X-Requested-With`` header (which a cross-site form cannot send).
- Host allow-list: a server without a token answers only requests addressed to its own names (the loopback
  names, the address it binds, ``VIZ_SERVER_ALLOWED_HOSTS``), so a web page cannot drive it through DNS
  rebinding (the attack Jupyter's allow-list guards against). State-changing requests that carry an Origin
  must come from one of those names too.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask, abort, jsonify, redirect, request, session

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def persistent_secret(path: Path, length: int = 32) -> str:
    """A random secret kept in the data folder (created with mode 0600 on first use)."""
    if path.is_file():
        return path.read_text().strip()
    value = secrets.token_urlsafe(length)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(value)
    return value


def required_token(settings, host: str) -> str | None:
    """The token requests must carry, or None when the server is loopback-only and no token is set."""
    if settings.token:
        return settings.token
    if host in LOOPBACK_HOSTS:
        return None
    return persistent_secret(settings.data_dir / "access_token", 24)


def host_allow_list(settings, host: str, token: str | None) -> frozenset[str] | None:
    """The host names requests may address, or None for any (a token-protected server without a configured
    list: a rebinding page has no token, so it gets nowhere)."""
    if "*" in settings.allowed_hosts or (token is not None and not settings.allowed_hosts):
        return None
    names = {"127.0.0.1", "localhost", "::1", *settings.allowed_hosts}
    if host not in ("0.0.0.0", "::", ""):
        names.add(host.lower())
    return frozenset(names)


def host_name(value: str) -> str:
    """The name part of a Host header or an Origin's netloc: ``[::1]:8000`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def origin_host(origin: str) -> str | None:
    """The host name of an Origin header read strictly (RFC 6454: scheme://host[:port], nothing else): None for
    ``null``, userinfo (``http://localhost:80@evil.test`` names evil.test), a path, or anything unparsable."""
    try:
        parts = urlsplit(origin.strip())
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or "@" in parts.netloc or parts.path or parts.query or parts.fragment or not parts.hostname:
        return None
    return parts.hostname.lower()


CONTROL_CHARACTERS = frozenset(chr(code) for code in range(32) if chr(code) not in "\t\n\r") | {"\x7f"}


def has_control_characters(text: str) -> bool:
    return any(character in CONTROL_CHARACTERS for character in text)


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def install(app: Flask, token: str | None, allowed: frozenset[str] | None = None) -> None:
    app.jinja_env.globals["csrf_token"] = csrf_token

    def refuse(status: int, message: str):
        if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
            return jsonify(error=message), status
        abort(status, description=message)

    @app.before_request
    def check_host_and_origin():
        if allowed is None:
            return None
        if host_name(request.host) not in allowed:
            return refuse(403, f"this server answers only to {', '.join(sorted(allowed))}; set VIZ_SERVER_ALLOWED_HOSTS to add a name.")
        origin = request.headers.get("Origin")
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and origin:
            if origin_host(origin) not in allowed:
                return refuse(403, "this request came from another web site and was refused.")
        return None

    @app.before_request
    def check_access():
        if token is not None and not session.get("signed_in"):
            header = request.headers.get("Authorization", "")
            given = header[7:] if header.startswith("Bearer ") else request.args.get("token", "")
            if not given or not hmac.compare_digest(given, token):
                if request.path.startswith("/api/"):
                    return jsonify(error="this server needs its access token: send 'Authorization: Bearer TOKEN'."), 401
                abort(401)
            if not header:  # a browser that came with ?token=: remember it and drop the token from the URL
                session["signed_in"] = True
                return redirect(request.path)
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            if request.path.startswith("/api/"):
                header = request.headers.get("Authorization", "")
                bearer = token is not None and header.startswith("Bearer ") and hmac.compare_digest(header[7:], token)  # only a valid token counts
                if not request.headers.get("X-Requested-With") and not bearer:
                    return jsonify(error="API writes must send an X-Requested-With header (or a valid Bearer token)."), 403
            else:
                given = request.form.get("csrf_token", "")
                if not given or not hmac.compare_digest(given, session.get("csrf", "")):
                    abort(400, description="the form has expired or did not come from this server; reload the page and submit again.")

    @app.before_request
    def refuse_control_characters():
        """NUL and other control characters in a query or form value (a database may refuse them with an error
        the user cannot read); tabs and line breaks stay allowed (labels are typed one per line)."""
        for source, values in (("query", request.args), ("form", request.form)):
            for key, value in values.items(multi=True):
                if has_control_characters(key) or has_control_characters(value):
                    return refuse(400, f"a {source} value holds a control character; send plain text.")
        return None

    @app.after_request
    def security_headers(response):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        return response
