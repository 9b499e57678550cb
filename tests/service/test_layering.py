"""The arrows of docs/architecture.md, checked on the source: no web framework below ``voxgate.api``, no
router importing another, no door importing a router."""

from __future__ import annotations

import ast
from pathlib import Path

import voxgate

PACKAGE = Path(voxgate.__file__).parent
WEB = ("fastapi", "starlette", "uvicorn")
BELOW_API = ("service", "streams", "telephony", "store", "biometrics", "audio")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (TYPE_CHECKING blocks included). Parsed once, at
    collection: CPython 3.11's parser can trip over a recursion counter left by earlier tests."""
    if path in _PARSED:
        return _PARSED[path]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    _PARSED[path] = names
    return names


_PARSED: dict[Path, set[str]] = {}
for _source in [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "bench").glob("*.py")]:
    _imports(_source)


def _files(*rooms: str) -> list[Path]:
    files = [f for room in rooms for f in sorted((PACKAGE / room).rglob("*.py"))]
    assert files, rooms
    return files


def test_nothing_below_the_api_imports_a_web_framework() -> None:
    offenders = {
        str(f.relative_to(PACKAGE)): sorted(m for m in _imports(f) if m.split(".")[0] in WEB)
        for f in _files(*BELOW_API)
    }
    assert {f: m for f, m in offenders.items() if m} == {}


def test_nothing_below_the_api_imports_it() -> None:
    offenders = {
        str(f.relative_to(PACKAGE)): sorted(m for m in _imports(f) if m.startswith(("voxgate.api", "voxgate.cli")))
        for f in _files(*BELOW_API)
    }
    assert {f: m for f, m in offenders.items() if m} == {}


def test_no_router_imports_another_router() -> None:
    offenders = {
        f.name: sorted(m for m in _imports(f) if m.startswith("voxgate.api.routers"))
        for f in _files("api/routers")
        if f.name != "__init__.py"
    }
    assert {f: m for f, m in offenders.items() if m} == {}


def test_only_the_app_and_the_router_table_import_routers() -> None:
    users = {
        str(f.relative_to(PACKAGE))
        for f in PACKAGE.rglob("*.py")
        if any(m.startswith("voxgate.api.routers") for m in _imports(f))
    }
    assert users <= {"api/app.py", "api/routers/__init__.py"}
    bench = Path(__file__).resolve().parents[2] / "bench"
    assert not [f.name for f in bench.glob("*.py") if any("voxgate.api.routers" in m for m in _imports(f))]


def test_the_layering_check_sees_an_offender(tmp_path: Path) -> None:
    sample = tmp_path / "door.py"
    sample.write_text("from fastapi import APIRouter\nimport starlette.requests\n")
    assert {"fastapi", "starlette.requests"} <= _imports(sample)
