"""Errors of authentication and authorisation, each with the HTTP status the server answers.

Every malformed credential (ticket, CSRF token, API token header, cookie) raises `AuthError`,
never another exception type, so the request boundary needs only one `except`.
"""

from __future__ import annotations

from chunkyard.errors import ChunkyardError


class AuthError(ChunkyardError):
    """Authentication failed or a credential is malformed (HTTP 401).

    `str(err)` is safe to log; `public_message` is what a client may see: PBS answers every
    failed login with the same text so that callers cannot probe which part was wrong.
    """

    http_status: int = 401
    public_message: str = "authentication failure"


class PermissionDenied(AuthError):
    """The caller is authenticated but lacks a privilege or does not own the group (HTTP 403)."""

    http_status = 403
    public_message = "permission check failed"

    def __init__(self, message: str = "permission check failed") -> None:
        super().__init__(message)
        self.public_message = message


class LoginRateLimited(AuthError):
    """Too many failed logins from this source for this user; try again later (HTTP 429)."""

    http_status = 429
    public_message = "too many failed login attempts, try again later"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
