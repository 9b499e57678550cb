"""HTTP digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 7616), with the SHA-256 of RFC 8760.

A registrar answers REGISTER with 401 (``WWW-Authenticate``) or 407 (``Proxy-Authenticate``); the user
agent answers the strongest challenge it supports with ``Authorization`` / ``Proxy-Authorization``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from voxgate.errors import VoxgateError


class DigestError(VoxgateError):
    """A challenge this user agent cannot answer (unknown scheme, algorithm or qop)."""


def _hash(name: str) -> Callable[[bytes], str]:
    def digest(data: bytes) -> str:
        return hashlib.new(name, data).hexdigest()

    return digest


# strongest first; SHA-512-256 only where the local OpenSSL provides it
ALGORITHMS: dict[str, Callable[[bytes], str]] = {"SHA-256": _hash("sha256"), "MD5": _hash("md5")}
if "sha512_256" in hashlib.algorithms_available:
    ALGORITHMS = {"SHA-512-256": _hash("sha512_256"), **ALGORITHMS}


@dataclass
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"  # without -sess
    session: bool = False  # the -sess variant
    qop: list[str] = field(default_factory=list)
    opaque: str | None = None
    stale: bool = False

    @property
    def strength(self) -> int:
        order = list(ALGORITHMS)
        return len(order) - order.index(self.algorithm) if self.algorithm in order else -1


def _auth_params(text: str) -> dict[str, str]:
    """``a="x, y", b=z`` -> ``{"a": "x, y", "b": "z"}`` (names lower-cased, quotes and escapes removed)."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " ,\t":
            i += 1
        eq = text.find("=", i)
        if eq < 0:
            break
        name = text[i:eq].strip().lower()
        i = eq + 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            value = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            i += 1
            params[name] = "".join(value)
        else:
            end = text.find(",", i)
            end = n if end < 0 else end
            params[name] = text[i:end].strip()
            i = end
    return params


def parse_challenge(value: str) -> Challenge:
    """One ``WWW-Authenticate``/``Proxy-Authenticate`` value; DigestError for other schemes or garbage."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported authentication scheme {scheme!r}")
    params = _auth_params(rest)
    if "nonce" not in params or "realm" not in params:
        raise DigestError("digest challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5").upper()
    session = algorithm.endswith("-SESS")
    algorithm = algorithm.removesuffix("-SESS")
    qop = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=algorithm,
        session=session,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def best_challenge(values: Iterable[str]) -> Challenge:
    """The strongest challenge we can answer among several (RFC 8760 §2.4: a server may offer many)."""
    usable = []
    for value in values:
        try:
            challenge = parse_challenge(value)
        except DigestError:
            continue
        if challenge.algorithm in ALGORITHMS and (not challenge.qop or "auth" in challenge.qop):
            usable.append(challenge)
    if not usable:
        raise DigestError("no digest challenge with a supported algorithm (MD5, SHA-256) and qop")
    return max(usable, key=lambda c: c.strength)


def authorization(
    challenge: Challenge,
    method: str,
    uri: str,
    username: str,
    password: str,
    *,
    nc: int = 1,
    cnonce: str | None = None,
) -> str:
    """The ``Authorization`` (or ``Proxy-Authorization``) value answering ``challenge``."""
    h = ALGORITHMS.get(challenge.algorithm)
    if h is None:
        raise DigestError(f"unsupported digest algorithm {challenge.algorithm}")
    cnonce = cnonce or secrets.token_hex(8)
    nc_text = f"{nc:08x}"
    ha1 = h(f"{username}:{challenge.realm}:{password}".encode())
    if challenge.session:
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}".encode())
    ha2 = h(f"{method}:{uri}".encode())
    if challenge.qop:
        if "auth" not in challenge.qop:
            raise DigestError(f"unsupported qop {challenge.qop}")
        response = h(f"{ha1}:{challenge.nonce}:{nc_text}:{cnonce}:auth:{ha2}".encode())
    else:
        response = h(f"{ha1}:{challenge.nonce}:{ha2}".encode())
    algorithm = challenge.algorithm + ("-sess" if challenge.session else "")
    parts = [
        f'username="{_quote(username)}"',
        f'realm="{_quote(challenge.realm)}"',
        f'nonce="{_quote(challenge.nonce)}"',
        f'uri="{_quote(uri)}"',
        f'response="{response}"',
        f"algorithm={algorithm}",
    ]
    if challenge.qop:
        parts += ["qop=auth", f"nc={nc_text}", f'cnonce="{cnonce}"']
    if challenge.opaque is not None:
        parts.append(f'opaque="{_quote(challenge.opaque)}"')
    return "Digest " + ", ".join(parts)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
