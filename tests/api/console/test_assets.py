"""The console's files as shipped: every one in the package data, nothing fetched from elsewhere, every module
import resolving to a shipped file, served with a JavaScript type (browsers refuse modules served otherwise)
and the console's security headers."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import httpx
import pytest

from voxgate.api.console import CSP, STATIC_DIR

ROOT = Path(__file__).resolve().parents[3]
FILES = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name, not a fetch
IMPORTS = re.compile(r"""(?:from\s+|import\(\s*|new URL\(\s*)["']([^"']+)["']""")


def test_every_file_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "voxgate"
    ]
    package = ROOT / "voxgate"
    for path in FILES:
        relative = path.relative_to(package).as_posix()
        assert any(
            fnmatch.fnmatchcase(relative, p) and "/" not in relative[len(p.rstrip("*")) :] for p in patterns
        ), f"{relative} is not in [tool.setuptools.package-data]: a wheel would ship the console without it"


def test_nothing_comes_from_another_site() -> None:
    for path in FILES:
        text = path.read_text().replace(SVG_NAMESPACE, "")
        assert not re.search(r"https?://|//cdn|@import", text), f"{path.name} names another site"


def test_module_imports_resolve() -> None:
    found = 0
    for path in FILES:
        if path.suffix != ".js":
            continue
        for target in IMPORTS.findall(path.read_text()):
            assert target.startswith("."), f"{path.name} imports {target!r}: only relative paths work here"
            assert (path.parent / target).resolve().is_file(), f"{path.name} imports missing {target}"
            found += 1
    assert found >= 14  # app.js's pages, each page's lib.js, the microphone's worklet
    index = (STATIC_DIR / "index.html").read_text()
    for reference in re.findall(r'(?:src|href)="([^"#:]+)"', index):
        assert (STATIC_DIR / reference).is_file(), f"index.html names missing {reference}"


@pytest.mark.asyncio
async def test_served_with_types_and_headers(client: httpx.AsyncClient) -> None:
    home = await client.get("/")
    assert home.status_code == 307 and home.headers["location"] == "/console/"
    assert (await client.get("/console")).status_code in (307, 308)  # to /console/
    page = await client.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert (
        page.headers["content-security-policy"] == CSP and page.headers["x-content-type-options"] == "nosniff"
    )
    for path in FILES:
        if path.suffix == ".js":
            served = await client.get(f"/console/{path.relative_to(STATIC_DIR).as_posix()}")
            assert served.status_code == 200 and "javascript" in served.headers["content-type"], path.name
    missing = await client.get("/console/nope.js")
    assert missing.status_code == 404 and missing.json()["detail"]
