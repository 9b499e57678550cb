"""Markdown sections of ``docs/accuracy.md`` that several evaluation tools write.

``accuracy`` writes the document and ``streaming`` one section of it; each tool replaces only what it owns,
so running them in either order keeps both.
"""

from __future__ import annotations

from collections.abc import Sequence


def table_row(cells: Sequence[str]) -> str:
    """One row of a Markdown table."""
    return "| " + " | ".join(cells) + " |"


def _headings(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.startswith("## ")]


def sections(document: str) -> dict[str, str]:
    """Each ``## `` section of ``document`` by its heading line, with its body up to the next heading."""
    lines = document.splitlines()
    starts = _headings(lines)
    out: dict[str, str] = {}
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        out[lines[start]] = "\n".join(lines[start:end]).rstrip("\n") + "\n"
    return out


def replace_section(document: str, heading: str, section: str) -> str:
    """``document`` with the section under ``heading`` replaced by ``section`` (appended if it has none)."""
    lines = document.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        return document.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    kept_after = lines[end:]
    return (
        "\n".join(
            [*lines[:start], *section.rstrip("\n").splitlines(), *([""] if kept_after else []), *kept_after]
        )
        + "\n"
    )


def keep_foreign(old: str, new: str) -> str:
    """``new`` followed by the sections of ``old`` that ``new`` does not write (another tool's)."""
    own = sections(new)
    carried = [body for heading, body in sections(old).items() if heading not in own]
    return (
        "\n\n".join([new.rstrip("\n"), *(body.rstrip("\n") for body in carried)]) + "\n" if carried else new
    )
