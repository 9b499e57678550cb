"""The API account on first start: created from ``VOXGATE_ADMIN_PASSWORD`` or with a generated password."""

from __future__ import annotations

import hmac
import logging
import secrets
import sys
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from voxgate.settings import Settings
from voxgate.store import accounts, events, files

log = logging.getLogger(__name__)


async def ensure_account(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """Create the account on first start (an event records it); later starts only warn about settings
    that no longer apply."""
    configured = settings.admin_password.get_secret_value() if settings.admin_password else ""
    password = configured or accounts.generate_password()
    if await accounts.create_account(sessions, settings.admin_user, password):
        await events.record(
            sessions,
            events.PASSWORD_RESET,
            events.CREATED,
            username=settings.admin_user,
            source="first_start",
            generated=not configured,
        )
        log.info("created the API account %r", settings.admin_user)
        if not configured:
            announce_generated_password(settings.admin_user, password)
        elif len(configured) < accounts.MIN_PASSWORD_LENGTH:
            log.warning(
                "VOXGATE_ADMIN_PASSWORD is shorter than %d characters: change it",
                accounts.MIN_PASSWORD_LENGTH,
            )
        return
    existing = await accounts.account_name(sessions)
    if existing != settings.admin_user:
        log.warning(
            "the API account is %r; VOXGATE_ADMIN_USER=%r has no effect once the account exists",
            existing,
            settings.admin_user,
        )


def announce_generated_password(username: str, password: str) -> None:
    """The one time a generated password is shown: a banner on stderr (not the log, so log shippers do
    not copy it)."""
    rule = "=" * 78
    sys.stderr.write(
        f"\n{rule}\n"
        f"voxgate: created the API account {username!r} with this generated password:\n\n"
        f"    {password}\n\n"
        "It is shown only this once. Log in with POST /rest-auth/login/ and change it with\n"
        "POST /rest-auth/password/change/; if it is lost, run `voxgate reset-password` on this host.\n"
        f"{rule}\n\n"
    )
    sys.stderr.flush()


RESET_SECRET_FILE = "reset.secret"


def reset_secret_path(settings: Settings) -> Path:
    return settings.data_dir / RESET_SECRET_FILE


def rotate_reset_secret(settings: Settings) -> None:
    """A new secret for ``GET /api/v2/maintenance/reset_password``, in a file only the server's user can
    read: the reset then needs a shell on the host, whatever a proxy in front of voxgate does to the
    request (a proxy on the host makes every request look local). Made at start and after each reset."""
    files.write_private(reset_secret_path(settings), secrets.token_urlsafe(32) + "\n")


def reset_secret_matches(settings: Settings, offered: str | None) -> bool:
    if not offered:
        return False
    try:
        expected = reset_secret_path(settings).read_text().strip()
    except OSError:
        return False
    return bool(expected) and hmac.compare_digest(expected.encode(), offered.strip().encode())
