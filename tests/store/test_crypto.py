"""The secrets cipher: a versioned, key-named, authenticated value bound to its row."""

from __future__ import annotations

import pytest

from voxgate.store import crypto
from voxgate.store.crypto import PREFIX, Keyring

WHERE = "pbx.password/3f2b8c1e"


def test_sealed_values_name_their_format_and_key_and_read_back() -> None:
    keyring = Keyring.generate()
    sealed = keyring.seal("pa55 wörd", WHERE)
    assert sealed.startswith(f"{PREFIX}{keyring.current_id}:") and "pa55" not in sealed
    assert crypto.sealed_key_id(sealed) == keyring.current_id
    assert keyring.unseal(sealed, WHERE) == "pa55 wörd"
    assert keyring.seal("pa55 wörd", WHERE) != sealed, "a fresh nonce every time"
    assert keyring.unseal("plain from an older store", WHERE) == "plain from an older store"
    assert repr(keyring) == "Keyring()", "no key in logs or tracebacks"


def test_a_value_does_not_decrypt_elsewhere_altered_or_with_another_key() -> None:
    keyring = Keyring.generate()
    sealed = keyring.seal("secret", WHERE)
    with pytest.raises(ValueError, match="altered or copied from another row"):
        keyring.unseal(sealed, "pbx.password/another-row")
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(ValueError, match="altered"):
        keyring.unseal(flipped, WHERE)
    other = Keyring.generate()
    with pytest.raises(ValueError, match=f"encrypted with secrets key {keyring.current_id}, not with"):
        other.unseal(sealed, WHERE)
    rotating = Keyring(other.current, previous=keyring.current)
    assert rotating.unseal(sealed, WHERE) == "secret", "the previous key still reads"
    assert crypto.sealed_key_id(rotating.seal("secret", WHERE)) == other.current_id, "the current one seals"


def test_keys_are_32_bytes_of_base64() -> None:
    key = crypto.new_key()
    assert len(crypto.parse_key(key, "k")) == 32
    assert crypto.parse_key(key.rstrip("="), "k") == crypto.parse_key(key, "k"), "padding optional"
    assert crypto.parse_key(f"  {key}\n", "k") == crypto.parse_key(key, "k")
    for bad in ("", "short", key[:-8], "!" * 44):
        with pytest.raises(ValueError, match="32 random bytes in base64"):
            crypto.parse_key(bad, "k")
    assert crypto.key_id(crypto.parse_key(key, "k")) not in key
