"""``voxgate reset-password``: set a new password for the API account, on the host.

It replaces Voice Verify's vendor reset: whoever can run commands on the host (and read the store) can
reset the password, with or without a running server. Every token is revoked; a running server sees
that at once, since it checks tokens in the store on every request. The server's in-memory count of
failed logins is not touched (it is forgotten after 15 min, or at once by the loopback HTTP reset).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from voxgate.errors import VoxgateError
from voxgate.settings import Settings
from voxgate.store import accounts, events
from voxgate.store.db import Store


def reset_password(settings: Settings, password: str | None) -> str:
    """Give the account ``password`` (or a generated one) and revoke every token; the new password.

    The account is the one in the store (created with ``VOXGATE_ADMIN_USER`` on first start); on a store
    without one it is created as ``settings.admin_user``.
    """
    if (
        password is not None
        and not accounts.MIN_PASSWORD_LENGTH <= len(password) <= accounts.MAX_PASSWORD_LENGTH
    ):
        raise VoxgateError(
            f"the password must be {accounts.MIN_PASSWORD_LENGTH} to {accounts.MAX_PASSWORD_LENGTH} characters long"
        )
    new_password = password or accounts.generate_password()

    async def run() -> None:
        store = await Store(settings.resolved_database_url).open()
        try:
            username = await accounts.account_name(store.sessions) or settings.admin_user
            await accounts.set_password(store.sessions, username, new_password)
            await events.record(
                store.sessions,
                events.PASSWORD_RESET,
                events.OK,
                username=username,
                source="cli",
                generated=password is None,
            )
        finally:
            await store.close()

    asyncio.run(run())
    return new_password


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``reset-password`` subcommand (``sub`` is the result of ``add_subparsers``)."""
    parser = sub.add_parser(
        "reset-password",
        help="set a new password for the API account (on the host; revokes every token)",
        description="Replace the API account's password with a generated one (printed once) or one read "
        "from standard input (--password-stdin). Every token is revoked.",
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the new password from the first line of standard input instead of generating one",
    )


def command(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``voxgate reset-password``: exit code 0, the new password on stdout if it was generated."""
    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    new_password = reset_password(settings, password)
    if password is None:
        print(new_password)
        print(
            "the API password was replaced (shown above, only this once); every token is revoked",
            file=sys.stderr,
        )
    else:
        print("the API password was replaced; every token is revoked", file=sys.stderr)
    return 0
