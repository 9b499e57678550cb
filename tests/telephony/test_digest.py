"""Digest answers against the RFCs' own examples (RFC 2617 §3.5, RFC 7616 §3.9.1: MD5 and SHA-256)."""

from __future__ import annotations

import pytest

from voxgate.telephony.digest import DigestError, _auth_params, authorization, best_challenge, parse_challenge

RFC7616 = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


def _response(header: str) -> str:
    return _auth_params(header.removeprefix("Digest "))["response"]


def test_rfc2617_md5_example() -> None:
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    header = authorization(challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b")
    assert _response(header) == "6629fae49393a05397450978507c4ef1"
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in header and "nc=00000001" in header


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    challenge = parse_challenge(RFC7616.format(alg=algorithm))
    header = authorization(
        challenge,
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert _response(header) == expected
    assert f"algorithm={algorithm}" in header


def test_the_strongest_offered_challenge_is_answered() -> None:
    chosen = best_challenge([RFC7616.format(alg="MD5"), RFC7616.format(alg="SHA-256"), "Basic realm=x"])
    assert chosen.algorithm == "SHA-256"


def test_without_qop_the_rfc2069_form() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n"')
    header = authorization(challenge, "REGISTER", "sip:example.com", "u", "p")
    assert "qop" not in header and "cnonce" not in header


@pytest.mark.parametrize(
    "bad",
    [
        "Basic realm=x",
        "Digest",
        'Digest realm="r"',
        "Digest nonce=",
        "",
        'Digest realm="r", nonce="n", algorithm=SHA-1',
    ],
)
def test_unanswerable_challenges_raise_digest_error(bad: str) -> None:
    with pytest.raises(DigestError):
        best_challenge([bad])
