"""The engine and the session must not know each other (issue 10): the engine works on a stream's
:class:`~voxgate.streams.stages.SpeechPipeline`, the session is handed a ``submit`` callable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STREAMS = Path(__file__).resolve().parents[2] / "voxgate" / "streams"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, anywhere (``TYPE_CHECKING`` blocks and functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # relative imports resolve against voxgate.streams; `from x import y` may import module x.y
            module = ".".join(filter(None, ["voxgate.streams" if node.level else "", node.module or ""]))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [("inference", "voxgate.streams.session"), ("session", "voxgate.streams.inference")],
)
def test_inference_and_session_do_not_import_each_other(module: str, forbidden: str) -> None:
    imports = imported_modules(STREAMS / f"{module}.py")
    assert not {name for name in imports if name == forbidden or name.startswith(forbidden + ".")}, (
        f"voxgate/streams/{module}.py imports {forbidden}"
    )


def test_the_check_sees_imports_under_type_checking(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from voxgate.streams.session import StreamSession\n"
        "def f() -> None:\n"
        "    import voxgate.streams.inference\n"
        "from . import stages\n"
    )
    assert {
        "voxgate.streams.session",
        "voxgate.streams.inference",
        "voxgate.streams.stages",
    } <= imported_modules(sample)
