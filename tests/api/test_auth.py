from __future__ import annotations

import argparse
import asyncio
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from argon2 import PasswordHasher
from fastapi import FastAPI
from pydantic import SecretStr

from voxgate import accounts_cli
from voxgate.api.app import create_app
from voxgate.api.routers.auth import RESET_SECRET_HEADER
from voxgate.errors import VoxgateError
from voxgate.service.accounts import reset_secret_path
from voxgate.service.runtime import Runtime
from voxgate.service.throttle import LoginThrottle, Policy
from voxgate.settings import Settings
from voxgate.store import accounts, events
from voxgate.store.db import Store

pytestmark = pytest.mark.both_stores  # SQLite and PostgreSQL (tests/conftest.py)

ADMIN_PASSWORD = "correct horse battery staple"  # as in tests/api/conftest.py
PROTECTED = "/api/v2/logging"  # any endpoint that needs a token
GOOD = {"username": "admin", "password": ADMIN_PASSWORD}
BAD = {"username": "admin", "password": "not the password"}


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 with the smallest cost: the behaviour under test is the same, 100x faster."""
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def runtime_of(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


def client_from(app: FastAPI, host: str, base_url: str = "http://voxgate") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(host, 1234)), base_url=base_url)


@pytest_asyncio.fixture
async def local(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the host itself, calling http://127.0.0.1 (as `curl http://127.0.0.1:8000/...` would)."""
    async with client_from(app, "127.0.0.1", "http://127.0.0.1:8000") as c:
        yield c


async def login(client: httpx.AsyncClient, password: str = ADMIN_PASSWORD) -> str:
    response = await client.post("/rest-auth/login/", json={"username": "admin", "password": password})
    assert response.status_code == 200, response.text
    key: str = response.json()["key"]
    return key


def token(key: str) -> dict[str, str]:
    return {"Authorization": f"Token {key}"}


async def logged(app: FastAPI, kind: str) -> list[events.Event]:
    page = await events.find(runtime_of(app).store.sessions, events.EventFilter(types=(kind,)))
    return page.events


# -- login ---------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_login_answers_a_token_like_django_rest_auth(app: FastAPI, client: httpx.AsyncClient) -> None:
    response = await client.post("/rest-auth/login/", json=GOOD)
    assert response.status_code == 200
    assert set(response.json()) == {"key"} and len(response.json()["key"]) >= 40
    assert (await client.get(PROTECTED, headers=token(response.json()["key"]))).status_code == 200
    (event,) = await logged(app, events.LOGIN)
    assert event.outcome == "ok" and event.detail == {"username": "admin", "client": "127.0.0.1"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "body",
    [
        BAD,
        {"username": "nobody", "password": ADMIN_PASSWORD},
        {"username": "Admin", "password": ADMIN_PASSWORD},
    ],
)
async def test_wrong_credentials_are_400(
    app: FastAPI, client: httpx.AsyncClient, body: dict[str, str]
) -> None:
    response = await client.post("/rest-auth/login/", json=body)
    assert response.status_code == 400
    assert response.json() == {"detail": "Unable to log in with provided credentials."}
    (event,) = await logged(app, events.LOGIN)
    assert event.outcome == "failed" and event.detail["username"] == body["username"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "admin"},
        {"username": "admin", "password": ""},
        {"username": "a" * 151, "password": "x"},
        {"username": "ad\x00min", "password": "x"},
    ],
)
async def test_malformed_login_is_422(client: httpx.AsyncClient, body: dict[str, str]) -> None:
    assert (await client.post("/rest-auth/login/", json=body)).status_code == 422


# -- the token -----------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Token "},
        {"Authorization": "Token not-a-token"},
        {"Authorization": "Bearer x"},
        {"Authorization": "garbage"},
    ],
)
async def test_no_or_bad_token_is_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.get(PROTECTED, headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"]


@pytest.mark.asyncio
async def test_expired_token_is_401(app: FastAPI, client: httpx.AsyncClient) -> None:
    expired = await accounts.issue_token(runtime_of(app).store.sessions, "admin", timedelta(seconds=-1))
    response = await client.get(PROTECTED, headers=token(expired))
    assert response.status_code == 401 and response.json() == {"detail": "invalid or expired token"}


@pytest.mark.asyncio
async def test_logout_revokes_only_that_token(app: FastAPI, client: httpx.AsyncClient) -> None:
    first, second = await login(client), await login(client)
    response = await client.post("/rest-auth/logout/", headers=token(first))
    assert response.status_code == 200 and response.json() == {"detail": "Successfully logged out."}
    assert (await client.get(PROTECTED, headers=token(first))).status_code == 401
    assert (await client.post("/rest-auth/logout/", headers=token(first))).status_code == 401
    assert (await client.get(PROTECTED, headers=token(second))).status_code == 200
    assert [e.outcome for e in await logged(app, events.LOGOUT)] == ["ok"]


@pytest.mark.asyncio
async def test_logout_needs_a_token(client: httpx.AsyncClient) -> None:
    assert (await client.post("/rest-auth/logout/")).status_code == 401


# -- password change -----------------------------------------------------------------------------------

NEW = "a brand new password"


@pytest.mark.asyncio
async def test_password_change_revokes_the_other_tokens_not_the_callers(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    mine, other = await login(client), await login(client)
    response = await client.post(
        "/rest-auth/password/change/", headers=token(mine), json={"new_password1": NEW, "new_password2": NEW}
    )
    assert response.status_code == 200 and response.json() == {"detail": "New password has been saved."}
    assert (await client.get(PROTECTED, headers=token(mine))).status_code == 200
    assert (await client.get(PROTECTED, headers=token(other))).status_code == 401
    assert (await client.post("/rest-auth/login/", json=GOOD)).status_code == 400
    await login(client, NEW)
    assert [e.outcome for e in await logged(app, events.PASSWORD_CHANGE)] == ["ok"]


@pytest.mark.asyncio
async def test_password_change_with_the_old_password(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    wrong = {"new_password1": NEW, "new_password2": NEW, "old_password": "wrong old password"}
    response = await client.post("/rest-auth/password/change/", headers=auth, json=wrong)
    assert response.status_code == 400 and "old password" in response.json()["detail"]
    right = {"new_password1": NEW, "new_password2": NEW, "old_password": ADMIN_PASSWORD}
    assert (await client.post("/rest-auth/password/change/", headers=auth, json=right)).status_code == 200
    await login(client, NEW)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"new_password1": NEW, "new_password2": NEW + "!"}, 400),
        ({"new_password1": "short", "new_password2": "short"}, 422),
        ({"new_password1": NEW}, 422),
        ({"new_password1": "x" * 1025, "new_password2": "x" * 1025}, 422),
    ],
)
async def test_bad_password_change_is_refused(
    client: httpx.AsyncClient, auth: dict[str, str], body: dict[str, str], status: int
) -> None:
    response = await client.post("/rest-auth/password/change/", headers=auth, json=body)
    assert response.status_code == status
    assert (await client.get(PROTECTED, headers=auth)).status_code == 200
    await login(client)  # the password did not change


@pytest.mark.asyncio
async def test_password_change_needs_a_token(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/rest-auth/password/change/", json={"new_password1": NEW, "new_password2": NEW}
    )
    assert response.status_code == 401


# -- throttling ----------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.asyncio
async def test_repeated_failures_from_one_address_get_429_with_retry_after(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    clock = FakeClock()
    runtime_of(app).throttle = LoginThrottle(clock=clock)
    for _ in range(5):
        assert (await client.post("/rest-auth/login/", json=BAD)).status_code == 400
    refused = await client.post("/rest-auth/login/", json=GOOD)  # even the right password waits
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1" and "too many failed logins" in refused.json()["detail"]
    clock.now += 1.0
    assert (await client.post("/rest-auth/login/", json=BAD)).status_code == 400  # the 6th failure: 2 s
    assert (await client.post("/rest-auth/login/", json=GOOD)).headers["Retry-After"] == "2"
    clock.now += 2.0
    await login(client)
    await login(client)  # a success clears the address's count
    assert len(await logged(app, events.LOGIN)) == 6 + 2, "throttled attempts are not logged one by one"


@pytest.mark.asyncio
async def test_repeated_failures_for_one_username_from_many_addresses(app: FastAPI) -> None:
    clock = FakeClock()
    runtime_of(app).throttle = LoginThrottle(
        per_username=Policy(free_failures=3, base_delay_s=1.0, max_delay_s=60.0), clock=clock
    )
    for n in range(3):
        async with client_from(app, f"10.0.0.{n}") as attacker:
            assert (await attacker.post("/rest-auth/login/", json=BAD)).status_code == 400
    async with client_from(app, "10.9.9.9") as someone_else:
        response = await someone_else.post("/rest-auth/login/", json=GOOD)
        assert response.status_code == 429 and response.headers["Retry-After"] == "1"
        other_user = await someone_else.post("/rest-auth/login/", json={"username": "root", "password": "x"})
        assert other_user.status_code == 400, "another username is not blocked"
        clock.now += 1.0
        assert (await someone_else.post("/rest-auth/login/", json=GOOD)).status_code == 200


@pytest.mark.asyncio
async def test_a_parallel_burst_of_guesses_is_throttled_too(app: FastAPI, client: httpx.AsyncClient) -> None:
    runtime_of(app).throttle = LoginThrottle(clock=FakeClock())
    responses = await asyncio.gather(*(client.post("/rest-auth/login/", json=BAD) for _ in range(12)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [400] * 5 + [429] * 7, "no more than the free failures are checked at once"


def test_throttle_delays_double_up_to_the_cap_and_are_forgotten() -> None:
    clock = FakeClock()
    policy = Policy(free_failures=2, base_delay_s=1.0, max_delay_s=5.0, forget_after_s=100.0)
    throttle = LoginThrottle(per_address=policy, per_username=policy, clock=clock)
    waits = []
    for _ in range(6):
        throttle.failure("1.2.3.4", "admin")
        waits.append(throttle.retry_after_s("1.2.3.4", "admin"))
    assert waits == [0.0, 1.0, 2.0, 4.0, 5.0, 5.0]
    clock.now += 3.0
    assert throttle.retry_after_s("1.2.3.4", "admin") == 2.0
    assert throttle.retry_after_header("1.2.3.4", "admin") == 2
    clock.now += 1.5
    assert throttle.retry_after_header("1.2.3.4", "admin") == 1, "Retry-After rounds up"
    clock.now += 101.0
    assert throttle.retry_after_s("1.2.3.4", "admin") == 0.0
    assert len(throttle) == 0, "forgotten after forget_after_s without failures"


def test_throttle_success_clears_the_address_but_not_the_username() -> None:
    policy = Policy(free_failures=1, base_delay_s=10.0, max_delay_s=60.0)
    throttle = LoginThrottle(per_address=policy, per_username=policy, clock=FakeClock())
    throttle.failure("attacker", "admin")
    throttle.failure("attacker", "admin")
    throttle.failure("integrator", "admin")  # the integrator's attempt, counted before the check ...
    throttle.success("integrator", "admin")  # ... and taken back: it was right
    assert throttle.retry_after_s("integrator", "other") == 0.0
    assert throttle.retry_after_s("attacker", "other") == 20.0
    assert throttle.retry_after_s("integrator", "admin") == 20.0, "the username's count stays"
    throttle.clear()
    assert len(throttle) == 0


def test_throttle_memory_is_bounded() -> None:
    throttle = LoginThrottle(max_keys=100, clock=FakeClock())
    for n in range(1000):
        throttle.failure(f"10.0.{n // 256}.{n % 256}", "admin")
    assert len(throttle) == 100
    assert throttle.retry_after_s("10.9.9.9", "admin") > 0, "the username under attack is kept"


# -- reset ---------------------------------------------------------------------------------------------


def secret(app: FastAPI) -> dict[str, str]:
    """The header a host user can make: the reset secret read from the data directory."""
    path = reset_secret_path(runtime_of(app).settings)
    return {RESET_SECRET_HEADER: path.read_text().strip()}


@pytest.mark.asyncio
async def test_reset_password_needs_the_host_secret_even_through_a_local_proxy(
    app: FastAPI, local: httpx.AsyncClient
) -> None:
    """What nginx's default proxy_pass sends on behalf of anyone: a loopback peer, a loopback Host, no
    forwarding header. Without the secret that only the host can read, it is refused."""
    for headers in ({}, {RESET_SECRET_HEADER: "guess"}, {RESET_SECRET_HEADER: ""}):
        response = await local.get("/api/v2/maintenance/reset_password", headers=headers)
        assert response.status_code == 403, response.text
        assert RESET_SECRET_HEADER in response.json()["detail"]
    assert [e.detail["source"] for e in await logged(app, events.PASSWORD_RESET)] == ["first_start"]
    await login(local)  # the password is unchanged
    path = reset_secret_path(runtime_of(app).settings)
    assert path.stat().st_mode & 0o077 == 0, "only the server's user can read the secret"


@pytest.mark.asyncio
async def test_reset_password_from_loopback(
    app: FastAPI, local: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    runtime_of(app).throttle = throttle = LoginThrottle()
    throttle.failure("10.0.0.1", "admin")
    response = await local.get("/api/v2/maintenance/reset_password", headers=secret(app))
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "admin" and len(body["password"]) >= 24
    assert (await local.get(PROTECTED, headers=auth)).status_code == 401, "every token is revoked"
    assert len(throttle) == 0, "the failed-login counts are cleared"
    assert (await local.post("/rest-auth/login/", json=GOOD)).status_code == 400
    await login(local, body["password"])
    used = {RESET_SECRET_HEADER: ""}
    used[RESET_SECRET_HEADER] = response.request.headers[RESET_SECRET_HEADER]
    assert (await local.get("/api/v2/maintenance/reset_password", headers=used)).status_code == 403, (
        "a secret works once"
    )
    again = await local.get("/api/v2/maintenance/reset_password", headers=secret(app))
    assert again.json()["password"] != body["password"], "each call generates a new password"
    resets = await logged(app, events.PASSWORD_RESET)
    assert [(e.outcome, e.detail.get("source")) for e in resets] == [
        ("created", "first_start"),
        ("ok", "http"),
        ("ok", "http"),
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize("host", ["::1", "127.8.9.10", "::ffff:127.0.0.1"])
async def test_every_loopback_address_counts(app: FastAPI, host: str) -> None:
    async with client_from(app, host, "http://localhost:8000") as c:
        assert (await c.get("/api/v2/maintenance/reset_password", headers=secret(app))).status_code == 200


@pytest.mark.asyncio
@pytest.mark.parametrize("host", ["10.1.2.3", "192.168.1.20", "2001:db8::1", "::ffff:10.1.2.3", "testclient"])
async def test_reset_password_from_another_address_is_403(app: FastAPI, host: str) -> None:
    async with client_from(app, host, "http://127.0.0.1:8000") as remote:
        response = await remote.get("/api/v2/maintenance/reset_password", headers=secret(app))
    assert response.status_code == 403
    assert "loopback" in response.json()["detail"]
    assert [e.detail["source"] for e in await logged(app, events.PASSWORD_RESET)] == ["first_start"]
    async with client_from(app, "127.0.0.1") as c:
        await login(c)  # the password is unchanged


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "203.0.113.9"},
        {"X-Real-IP": "203.0.113.9"},
        {"Forwarded": "for=203.0.113.9"},
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Host": "rebound.evil.example"},
    ],
)
async def test_reset_password_refuses_proxies_web_pages_and_foreign_hosts(
    app: FastAPI, local: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await local.get("/api/v2/maintenance/reset_password", headers={**secret(app), **headers})
    assert response.status_code == 403, response.text
    assert response.json()["detail"]


@pytest.mark.asyncio
async def test_reset_password_typed_in_a_browser_on_the_host(app: FastAPI, local: httpx.AsyncClient) -> None:
    headers = {**secret(app), "Sec-Fetch-Site": "none"}
    response = await local.get("/api/v2/maintenance/reset_password", headers=headers)
    assert response.status_code == 200


# -- first start ---------------------------------------------------------------------------------------


def test_first_start_generates_and_shows_the_password_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path, admin_user="operator", log_json=False)

    async def start() -> str:
        app = create_app(settings)
        async with app.router.lifespan_context(app), client_from(app, "127.0.0.1") as c:
            response = await c.post("/rest-auth/login/", json={"username": "operator", "password": "?"})
            assert response.status_code == 400
        return capsys.readouterr().err

    first = asyncio.run(start())
    assert "created the API account 'operator'" in first
    password = next(line.strip() for line in first.splitlines() if line.startswith("    ") and line.strip())
    assert len(password) >= 24

    second = asyncio.run(start())
    assert password not in second and "generated password" not in second, "shown once, never again"

    async def check() -> None:
        store = await Store(settings.resolved_database_url).open()
        try:
            assert await accounts.check_password(store.sessions, "operator", password)
            created = (
                await events.find(store.sessions, events.EventFilter(types=(events.PASSWORD_RESET,)))
            ).events
            assert [(e.outcome, e.detail) for e in created] == [
                ("created", {"username": "operator", "source": "first_start", "generated": True})
            ]
        finally:
            await store.close()

    asyncio.run(check())


@pytest.mark.asyncio
async def test_first_start_with_a_configured_password(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    await login(client)
    assert ADMIN_PASSWORD not in capsys.readouterr().err


# -- voxgate reset-password ----------------------------------------------------------------------------


def test_cli_reset_password(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, admin_password=SecretStr("the first password"))

    async def start_and_login() -> str:
        app = create_app(settings)
        async with app.router.lifespan_context(app), client_from(app, "127.0.0.1") as c:
            return await login(c, "the first password")

    old_token = asyncio.run(start_and_login())
    generated = accounts_cli.reset_password(settings, None)
    chosen = accounts_cli.reset_password(settings, "a chosen password")
    with pytest.raises(VoxgateError, match="8 to 1024 characters"):
        accounts_cli.reset_password(settings, "short")

    async def check() -> None:
        store = await Store(settings.resolved_database_url).open()
        try:
            assert len(generated) >= 24 and chosen == "a chosen password"
            assert await accounts.check_password(store.sessions, "admin", "a chosen password")
            assert not await accounts.check_password(store.sessions, "admin", generated)
            assert await accounts.user_for_token(store.sessions, old_token) is None
            resets = (
                await events.find(store.sessions, events.EventFilter(types=(events.PASSWORD_RESET,)))
            ).events
            assert [(e.detail["source"], e.detail.get("generated")) for e in resets] == [
                ("first_start", False),
                ("cli", True),
                ("cli", False),
            ]
        finally:
            await store.close()

    asyncio.run(check())


def test_cli_reset_password_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path)
    assert accounts_cli.command(argparse.Namespace(password_stdin=False), settings) == 0
    printed = capsys.readouterr()
    assert len(printed.out.strip()) >= 24 and "only this once" in printed.err

    monkeypatch.setattr("sys.stdin", io.StringIO("piped in password\n"))
    assert accounts_cli.command(argparse.Namespace(password_stdin=True), settings) == 0
    printed = capsys.readouterr()
    assert printed.out == "" and "replaced" in printed.err

    async def check() -> None:
        store = await Store(settings.resolved_database_url).open()
        try:
            assert await accounts.check_password(store.sessions, "admin", "piped in password")
        finally:
            await store.close()

    asyncio.run(check())


def test_cli_parser() -> None:
    parser = argparse.ArgumentParser(prog="voxgate")
    accounts_cli.add_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["reset-password"]).password_stdin is False
    assert parser.parse_args(["reset-password", "--password-stdin"]).password_stdin is True


# -- the OpenAPI document ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_openapi_documents_the_auth_endpoints(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/swagger/openapi.json")).json()
    paths = schema["paths"]
    assert set(paths["/rest-auth/login/"]["post"]["responses"]) >= {"200", "400", "422", "429"}
    assert "Retry-After" in paths["/rest-auth/login/"]["post"]["responses"]["429"]["headers"]
    assert set(paths["/rest-auth/logout/"]["post"]["responses"]) >= {"200", "401"}
    assert set(paths["/rest-auth/password/change/"]["post"]["responses"]) >= {"200", "400", "401"}
    assert set(paths["/api/v2/maintenance/reset_password"]["get"]["responses"]) >= {"200", "403"}
    token_schema = schema["components"]["schemas"]["TokenResponse"]
    assert token_schema["properties"]["key"]["examples"]
