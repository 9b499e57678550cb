"""The secrets key at start: where it comes from, whether it fits the store, and the start-up step that
encrypts plain secrets and re-encrypts them after a key rotation.

The key is ``VOXGATE_SECRET_KEY`` if set, else the key file (``VOXGATE_SECRET_KEY_FILE``, default
``<data_dir>/secrets.key``, owner-only), generated on the first start of a store that needs no other key.
``VOXGATE_SECRET_KEY_PREVIOUS`` is a key being rotated out: secrets it sealed are read with it and sealed
again with the current key. A key that does not fit the store (a missing key file, another key) refuses
the start with :class:`~voxgate.store.crypto.SecretKeyError` naming both keys' ids; nothing is changed.

Why at start and not in an Alembic migration: a migration does not know the key (it is configuration, not
schema), runs once per revision while a rotation can happen at any start, and also runs in commands that
need no key (``voxgate reset-password``). The step is idempotent and takes one transaction.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from voxgate.settings import Settings
from voxgate.store import crypto, files
from voxgate.store.crypto import Keyring, SecretKeyError

log = logging.getLogger(__name__)

__all__ = ["load_keyring", "unlock"]


def _read_key_file(path: Path) -> bytes:
    files.private_file(path)
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretKeyError(f"cannot read the secrets key file {path}: {exc}") from exc
    try:
        return crypto.parse_key(text, f"the secrets key file {path}")
    except ValueError as exc:
        raise SecretKeyError(str(exc)) from exc


def _generate_key_file(path: Path) -> bytes:
    try:
        files.write_private(path, crypto.new_key() + "\n", exclusive=True)
    except FileExistsError:  # another process made it meanwhile: use theirs
        return _read_key_file(path)
    key = _read_key_file(path)
    log.warning(
        "generated the secrets key %s in %s: keep a copy apart from the store (without it the stored "
        "webhook secrets and SIP passwords cannot be read)",
        crypto.key_id(key),
        path,
    )
    return key


async def load_keyring(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> tuple[Keyring, str]:
    """The configured keys, and where the current one comes from (for messages).

    The key file is generated only when the store needs no key it cannot get otherwise: a store that
    holds no encrypted secret and records no key, or whose only key is the previous one (a rotation)."""
    previous = (
        crypto.parse_key(settings.secret_key_previous.get_secret_value(), "VOXGATE_SECRET_KEY_PREVIOUS")
        if settings.secret_key_previous is not None
        else None
    )
    if settings.secret_key is not None:
        current = crypto.parse_key(settings.secret_key.get_secret_value(), "VOXGATE_SECRET_KEY")
        source = "VOXGATE_SECRET_KEY"
    else:
        path = settings.resolved_secret_key_file
        source = f"the key file {path}"
        if path.exists():
            current = _read_key_file(path)
        else:
            surveyed = await crypto.survey(sessions)
            needed = surveyed.key_ids - ({crypto.key_id(previous)} if previous else set())
            if needed:
                raise SecretKeyError(
                    f"the store's secrets are encrypted with key {', '.join(sorted(needed))}, but the secrets "
                    f"key file {path} does not exist: put it back (or set VOXGATE_SECRET_KEY to that key); "
                    "voxgate does not make a new key for a store that needs an old one"
                )
            current = _generate_key_file(path)
    if previous is not None and previous == current:
        raise SecretKeyError(
            f"VOXGATE_SECRET_KEY_PREVIOUS is the current key ({source}): to rotate, configure the new key "
            "and give the old one as VOXGATE_SECRET_KEY_PREVIOUS"
        )
    return Keyring(current, previous), source


async def unlock(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> Keyring:
    """The keyring for this store after the start-up step: every stored secret decrypts, plain ones are
    encrypted, ones sealed with the previous key are sealed again with the current one."""
    keyring, source = await load_keyring(sessions, settings)
    try:
        resealed = await crypto.reseal(sessions, keyring)
    except SecretKeyError as exc:
        raise SecretKeyError(f"{exc} (the configured key {keyring.current_id} comes from {source})") from exc
    if resealed.encrypted:
        log.info("encrypted %d secrets an older voxgate stored in plain text", resealed.encrypted)
    if resealed.rotated:
        log.warning(
            "re-encrypted %d secrets from the previous key %s with key %s: VOXGATE_SECRET_KEY_PREVIOUS can "
            "be removed",
            resealed.rotated,
            keyring.previous_id,
            keyring.current_id,
        )
    elif keyring.previous is not None:
        log.warning(
            "VOXGATE_SECRET_KEY_PREVIOUS (key %s) is set but no stored secret uses it: remove it",
            keyring.previous_id,
        )
    return keyring
