"""The one API account, as in Voice Verify: login, logout, password change, and the loopback reset.

Shaped after django-rest-auth (which Voice Verify uses): ``POST /rest-auth/login/`` answers
``{"key": "<token>"}`` and every other endpoint takes ``Authorization: Token <token>``. Where
django-rest-auth answers a failed login with 400 ``{"non_field_errors": [...]}``, voxgate answers 400
``{"detail": "Unable to log in with provided credentials."}``: one error shape for the whole API.

On first start the account is created (``VOXGATE_ADMIN_USER``, default ``admin``) with
``VOXGATE_ADMIN_PASSWORD``, or with a generated password written once to stderr. After that the
settings no longer change the account: use ``POST /rest-auth/password/change/``, or on the host
``voxgate reset-password`` / ``GET /api/v2/maintenance/reset_password`` (loopback only, and only with the
secret in ``reset.secret`` of the data directory, which only the server's user can read).
"""

from __future__ import annotations

import ipaddress
import logging
from datetime import timedelta

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from voxgate.api.deps import RuntimeDep, User, token_from_header
from voxgate.api.errors import BadRequest, Detail, Forbidden, TooManyRequests
from voxgate.api.errors import error_response as _error
from voxgate.api.schemas import AUTH_RESPONSES
from voxgate.service import accounts as service_accounts
from voxgate.settings import Settings
from voxgate.store import accounts, events

log = logging.getLogger(__name__)


LOGIN_FAILED = "Unable to log in with provided credentials."

router = APIRouter(tags=["authentication"])


# -- schemas -------------------------------------------------------------------------------------------


class LoginRequest(BaseModel):
    username: str = Field(
        min_length=1,
        max_length=accounts.MAX_USERNAME_LENGTH,
        pattern=r"^[^\x00]*$",  # PostgreSQL text cannot hold NUL
        description="The account's username (`VOXGATE_ADMIN_USER` at first start, default `admin`).",
        examples=["admin"],
    )
    password: str = Field(
        min_length=1,
        max_length=accounts.MAX_PASSWORD_LENGTH,
        description="The account's password.",
        examples=["s3cret-passw0rd"],
    )


class TokenResponse(BaseModel):
    key: str = Field(
        description="The API token. Send it as `Authorization: Token <key>`. It expires after "
        "`VOXGATE_TOKEN_TTL_S` (default 7 days), at logout, or when the password changes from another session.",
        examples=["Q2hhbmdlIG1lIGFmdGVyIHRoZSBmaXJzdCBsb2dpbiwgcGxlYXNlLg"],
    )


class PasswordChangeRequest(BaseModel):
    new_password1: str = Field(
        min_length=accounts.MIN_PASSWORD_LENGTH,
        max_length=accounts.MAX_PASSWORD_LENGTH,
        description=f"The new password, at least {accounts.MIN_PASSWORD_LENGTH} characters.",
        examples=["correct horse battery staple"],
    )
    new_password2: str = Field(
        max_length=accounts.MAX_PASSWORD_LENGTH,
        description="The new password again; must equal `new_password1`.",
        examples=["correct horse battery staple"],
    )
    old_password: str | None = Field(
        default=None,
        max_length=accounts.MAX_PASSWORD_LENGTH,
        description="The current password. Optional (as in django-rest-auth's default); if given, it must be right.",
        examples=["s3cret-passw0rd"],
    )


class PasswordResetResponse(BaseModel):
    username: str = Field(description="The account whose password was replaced.", examples=["admin"])
    password: str = Field(
        description="The new, generated password. Shown only in this response; every token was revoked.",
        examples=["m2v1cCBxaFzhd7Tq0vJk3wXe"],
    )



# -- helpers -------------------------------------------------------------------------------------------


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 or an IPv4-mapped loopback address; names (even ``localhost``) are not."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


_LOCAL_HOSTNAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


RESET_SECRET_HEADER = "X-Voxgate-Reset-Secret"


def _refuse_unless_local(request: Request, settings: Settings) -> None:
    """403 unless the request comes straight from this host (loopback peer, no proxy, no web page) AND
    carries the reset secret. The secret is what makes it safe: a reverse proxy on the same host that adds
    no forwarding header and rewrites Host (nginx's defaults) makes any remote request look local."""
    if not service_accounts.reset_secret_matches(settings, request.headers.get(RESET_SECRET_HEADER)):
        raise Forbidden(
            f"reset_password needs the header {RESET_SECRET_HEADER} with the content of the file reset.secret "
            "in the data directory (readable only on the host); or run `voxgate reset-password` on the host"
        )
    if not is_loopback(request.client.host if request.client else None):
        raise Forbidden(
            "reset_password answers only on the host itself (loopback); elsewhere use `voxgate reset-password` on the host"
        )
    if any(name in request.headers for name in _FORWARDING_HEADERS):
        raise Forbidden(
            "reset_password is refused through a proxy: call it on the host, e.g. curl http://127.0.0.1:8000/..."
        )
    if "origin" in request.headers or request.headers.get("sec-fetch-site", "none") != "none":
        raise Forbidden("reset_password is refused when a web page makes the request")
    hostname = (request.url.hostname or "").strip("[]").lower()
    if hostname not in _LOCAL_HOSTNAMES and not is_loopback(hostname):
        raise Forbidden("reset_password must be called with a loopback Host, e.g. http://127.0.0.1:8000/...")


# -- endpoints -----------------------------------------------------------------------------------------


@router.post(
    "/rest-auth/login/",
    response_model=TokenResponse,
    summary="Log in: a token for the account",
    description='Checks the username and password and answers a new token (`{"key": ...}`, as '
    "django-rest-auth). Repeated failures from one address or for one username are slowed down: after "
    "5 failures from an address (10 for a username) further attempts are refused with 429 and a "
    "`Retry-After` header, for a delay that doubles with each further failure (at most 15 min per "
    "address, 1 min per username).",
    responses={
        400: _error("Wrong username or password.", LOGIN_FAILED),
        429: {
            **_error(
                "Too many failed logins; retry after `Retry-After` seconds.",
                "too many failed logins: try again in 4 s",
            ),
            "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
        },
    },
)
async def login(body: LoginRequest, request: Request, runtime: RuntimeDep) -> TokenResponse:
    sessions = runtime.store.sessions
    throttle = runtime.login_throttle
    address = client_address(request)
    wait_s = await throttle.retry_after_header(address, body.username)
    if wait_s:
        log.info("login throttled", extra={"client": address, "retry_after_s": wait_s})
        raise TooManyRequests(
            f"too many failed logins: try again in {wait_s} s", headers={"Retry-After": str(wait_s)}
        )
    await throttle.failure(address, body.username)  # counted before the check; a success takes it back
    if not await accounts.check_password(sessions, body.username, body.password):
        await events.record(sessions, events.LOGIN, events.FAILED, username=body.username, client=address)
        raise BadRequest(LOGIN_FAILED)
    await throttle.success(address, body.username)
    ttl = timedelta(seconds=runtime.settings.token_ttl_s)
    token = await accounts.issue_token(sessions, body.username, ttl)
    await events.record(sessions, events.LOGIN, events.OK, username=body.username, client=address)
    return TokenResponse(key=token)


@router.post(
    "/rest-auth/logout/",
    response_model=Detail,
    summary="Log out: revoke this token",
    description="Revokes the token the request carries; other tokens stay valid.",
    responses=AUTH_RESPONSES,
)
async def logout(user: User, request: Request, runtime: RuntimeDep) -> Detail:
    token = token_from_header(request.headers.get("authorization"))
    assert token is not None  # `user` resolved, so the header held a valid token
    await accounts.revoke_token(runtime.store.sessions, token)
    await events.record(
        runtime.store.sessions, events.LOGOUT, events.OK, username=user, client=client_address(request)
    )
    return Detail(detail="Successfully logged out.")


@router.post(
    "/rest-auth/password/change/",
    response_model=Detail,
    summary="Change the password",
    description="Sets a new password. Every other token of the account is revoked; the token of this "
    "request stays valid (same expiry). `old_password` is optional, but checked when given.",
    responses={
        400: _error(
            "The two new passwords differ, or `old_password` is wrong.",
            "The two password fields didn't match.",
        ),
        **AUTH_RESPONSES,
    },
)
async def change_password(
    body: PasswordChangeRequest, user: User, request: Request, runtime: RuntimeDep
) -> Detail:
    sessions = runtime.store.sessions
    address = client_address(request)
    if body.new_password1 != body.new_password2:
        raise BadRequest("The two password fields didn't match.")
    if body.old_password is not None and not await accounts.check_password(sessions, user, body.old_password):
        await events.record(
            sessions,
            events.PASSWORD_CHANGE,
            events.FAILED,
            username=user,
            client=address,
            reason="old password wrong",
        )
        raise BadRequest("Your old password was entered incorrectly. Please enter it again.")
    token = token_from_header(request.headers.get("authorization"))
    await accounts.change_password(sessions, user, body.new_password1, keep_token=token)
    await events.record(sessions, events.PASSWORD_CHANGE, events.OK, username=user, client=address)
    return Detail(detail="New password has been saved.")


@router.get(
    "/api/v2/maintenance/reset_password",
    response_model=PasswordResetResponse,
    tags=["maintenance"],
    summary="Reset the password (on the host only)",
    description="Replaces the account's password with a new generated one and answers it, once: it is "
    "not stored anywhere readable and a second call generates another. Every token is revoked and the "
    "failed-login counts are cleared. No token needed, but it needs the header `X-Voxgate-Reset-Secret` "
    "with the content of the file `reset.secret` in the data directory (owner-only; a new one is written "
    "at every start and after every reset), and it answers only a request made on the host itself: from a "
    "loopback address (127.0.0.0/8, ::1), to a loopback Host (`127.0.0.1`, "
    "`localhost`, `[::1]`), not through a proxy (no `Forwarded`/`X-Forwarded-For`/`X-Real-IP`) and not "
    "from a web page (no `Origin`, `Sec-Fetch-Site` absent or `none`); anything else gets 403. "
    "`voxgate reset-password` on the host does the same without a running server.",
    responses={
        403: _error(
            "Not a request made on the host itself.",
            "reset_password answers only on the host itself (loopback)",
        )
    },
)
async def reset_password(request: Request, runtime: RuntimeDep) -> PasswordResetResponse:
    sessions = runtime.store.sessions
    address = client_address(request)
    try:
        _refuse_unless_local(request, runtime.settings)
    except Forbidden as refused:
        log.warning("password reset refused: %s", refused, extra={"client": address})
        raise
    username = await accounts.account_name(sessions) or runtime.settings.admin_user
    password = accounts.generate_password()
    await accounts.set_password(sessions, username, password)
    await runtime.login_throttle.clear()
    await events.record(
        sessions, events.PASSWORD_RESET, events.OK, username=username, client=address, source="http"
    )
    service_accounts.rotate_reset_secret(runtime.settings)  # a secret works once
    log.warning(
        "the API password was reset from the host; every token was revoked", extra={"client": address}
    )
    return PasswordResetResponse(username=username, password=password)
