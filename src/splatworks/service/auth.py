"""Access rules: ``job_id`` manages a job, ``pub_key`` only views it; an optional API token guards job creation
and admin routes. Tokens are compared in constant time."""

from __future__ import annotations

import hashlib
import secrets

from fastapi import HTTPException, Request

from splatworks.service.settings import ServiceSettings


def _presented_token(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-token", "")


def require_api_token(request: Request) -> None:
    """Dependency for job creation: passes when no token is configured, else needs the right token."""
    settings: ServiceSettings = request.app.state.settings
    if not settings.api_token:
        return
    if not secrets.compare_digest(_presented_token(request).encode(), settings.api_token.encode()):
        raise HTTPException(401, "this server needs an API token: send the header 'Authorization: Bearer TOKEN' "
                                 "(ask the server's administrator for the token)",
                            headers={"WWW-Authenticate": "Bearer"})


def require_admin(request: Request) -> None:
    """Dependency for admin routes: they exist only on a server started with an API token."""
    settings: ServiceSettings = request.app.state.settings
    if not settings.api_token:
        raise HTTPException(403, "admin routes are disabled on this server: start it with --api-token TOKEN "
                                 "(or use the `splatworks admin` command on the server machine)")
    require_api_token(request)


def owner_hash(request: Request) -> str | None:
    """Hash of the client's own ``X-Client-Token`` (any random string a client keeps), for "list my jobs"."""
    token = request.headers.get("x-client-token", "").strip()
    if not token:
        return None
    return hashlib.sha256(token.encode()).hexdigest()
