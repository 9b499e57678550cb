"""One exception-to-status table: every domain error voxgate defines has its own row, and each row is
what a client gets (status and a JSON ``detail`` naming the problem)."""

from __future__ import annotations

import importlib
import pkgutil

import httpx
import pytest
from fastapi import FastAPI

import voxgate
from voxgate import errors
from voxgate.api import errors as api_errors
from voxgate.api.errors import STATUS, ApiError

# Only `voxgate models prepare` imports torch: those modules define no domain error.
SKIP = ("voxgate.biometrics.prepare",)


def _domain_errors() -> set[type[errors.VoxgateError]]:
    for module in pkgutil.walk_packages(voxgate.__path__, "voxgate."):
        if not module.name.startswith(SKIP) and not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found: set[type[errors.VoxgateError]] = set()
    todo: list[type[errors.VoxgateError]] = [errors.VoxgateError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return {c for c in found if c.__module__.startswith("voxgate") and not issubclass(c, ApiError)}


def _instance(cls: type[errors.VoxgateError]) -> errors.VoxgateError:
    exc = cls.__new__(cls)
    errors.VoxgateError.__init__(exc, f"{cls.__name__} happened")
    return exc


def test_every_domain_error_has_a_row() -> None:
    missing = sorted(f"{c.__module__}.{c.__qualname__}" for c in _domain_errors() if c not in STATUS)
    assert missing == []


def test_things_not_found_are_404_and_capacity_is_503() -> None:
    for cls, status in STATUS.items():
        if cls.__name__.endswith("NotFound"):
            assert status == 404, cls
    assert STATUS[errors.NotRunning] == 503 and STATUS[errors.MaintenanceMode] == 423


@pytest.mark.asyncio
async def test_each_row_is_the_answer() -> None:
    app = FastAPI()
    api_errors.install(app)

    @app.get("/raise/{name}")
    async def raise_it(name: str) -> None:
        raise _instance(next(c for c in STATUS if c.__qualname__ == name))

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for cls, status in STATUS.items():
            response = await client.get(f"/raise/{cls.__qualname__}")
            assert response.status_code == status, cls
            assert response.json() == {"detail": f"{cls.__name__} happened"}
