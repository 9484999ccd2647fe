"""Who may call what: an admin bearer token and an optional API key for read endpoints.

Secrets come from the environment when the app is built (never at import): the admin
token from `serve.admin_token_env` (admin endpoints are disabled while it is unset), the
read key from `serve.api_key_env` (read endpoints are open while it is unset). Both are
compared in constant time (`hmac.compare_digest`), so response timing says nothing about
how much of a guess was right.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from features.settings import ServeConfig

API_KEY_HEADER = "X-API-Key"

_bearer = HTTPBearer(auto_error=False, description="the admin token (HAOWU_ADMIN_TOKEN)")
_api_key = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="read key, when HAOWU_API_KEY is set"
)


class AuthError(Exception):
    """401 (no or wrong credentials) or 403 (admin disabled)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code = status, code
        super().__init__(message)


@dataclass(frozen=True)
class Secrets:
    admin_token: bytes | None
    api_key: bytes | None

    @classmethod
    def from_env(cls, cfg: ServeConfig) -> Secrets:
        def read(name: str) -> bytes | None:
            value = os.environ.get(name, "")
            return value.encode() if value else None

        return cls(read(cfg.admin_token_env), read(cfg.api_key_env))


def _matches(given: str | None, secret: bytes) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), secret)


def _secrets(request: Request) -> Secrets:
    return request.app.state.secrets


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    secret = _secrets(request).admin_token
    if secret is None:
        raise AuthError(403, "admin_disabled", "admin endpoints are off: no admin token is set")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthError(401, "unauthorized", "admin endpoints need Authorization: Bearer <token>")
    if not _matches(credentials.credentials, secret):
        raise AuthError(401, "unauthorized", "wrong admin token")


async def require_api_key(request: Request, key: Annotated[str | None, Depends(_api_key)]) -> None:
    secret = _secrets(request).api_key
    if secret is not None and not _matches(key, secret):
        raise AuthError(401, "unauthorized", f"this endpoint needs a valid {API_KEY_HEADER} header")


def is_admin(request: Request) -> bool:
    """Whether the request carries the admin token (no error either way): readiness shows
    its details, paths and the last load error, to the admin alone."""
    secret = _secrets(request).admin_token
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return secret is not None and scheme.lower() == "bearer" and _matches(token.strip(), secret)


AdminAuth = Annotated[None, Depends(require_admin)]
ReadAuth = Annotated[None, Depends(require_api_key)]
