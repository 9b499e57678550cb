"""Markdown sections of ``docs/accuracy.md`` that several evaluation tools write.

``accuracy`` writes the document and ``streaming`` one section of it; each tool replaces only what it owns,
so running them in either order keeps both.

Conclusions drawn from the measured tables are people's text, not the generators': each generated section
carries a *notes* block between :data:`NOTES_OPEN` and :data:`NOTES_CLOSE`, which a rewrite takes over from
the existing document (:func:`carry_notes`). A new block says :data:`NOTES_PLACEHOLDER` until someone
writes the notes from the figures above it, and checks them when the figures change.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)

NOTES_OPEN = "<!-- notes: written from the tables above; the generator keeps this block -->"
NOTES_CLOSE = "<!-- /notes -->"
NOTES_PLACEHOLDER = "Notes: none yet — write them from the tables."


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


def notes_block(text: str = NOTES_PLACEHOLDER) -> list[str]:
    """The lines of a notes block holding ``text`` (a generator writes it with the placeholder; an empty
    block gets the placeholder too)."""
    return [NOTES_OPEN, "", *(text.strip("\n") or NOTES_PLACEHOLDER).splitlines(), "", NOTES_CLOSE]


Key = tuple[str, int]


def _segments(text: str) -> list[tuple[Key | None, list[str]]]:
    """``text`` cut into plain lines (key None) and notes blocks (markers included), each block keyed by the
    ``## `` heading above it ("" before any) and its place under that heading (0, 1, ...)."""
    out: list[tuple[Key | None, list[str]]] = []
    heading, count, block = "", 0, None
    for line in text.splitlines():
        if block is not None:
            block.append(line)
            if line == NOTES_CLOSE:
                out.append(((heading, count), block))
                count, block = count + 1, None
        elif line == NOTES_OPEN:
            block = [line]
        else:
            if line.startswith("## "):
                heading, count = line, 0
            out.append((None, [line]))
    if block is not None:
        raise ValueError(f"a notes block under {heading or 'the title'!r} has no {NOTES_CLOSE}")
    return out


def notes(text: str) -> dict[Key, str]:
    """The text of each notes block in ``text`` (without the markers and the blank lines around it)."""
    return {key: "\n".join(lines[1:-1]).strip("\n") for key, lines in _segments(text) if key is not None}


def carry_notes(old: str, new: str) -> str:
    """``new`` with the text of each notes block taken from the block in the same place of ``old``.

    ``old`` and ``new`` are a section or a whole document; a block is matched by the ``## `` heading it is
    under, so the tables around it may change. A block that ``old`` lacks stays as ``new`` has it. Written
    notes that ``new`` has no block for (a renamed or removed section) are lost: each is logged as a warning.
    """
    kept = notes(old)
    segments = _segments(new)
    placed = {key for key, _ in segments}
    for key, text in kept.items():
        if key not in placed and text != NOTES_PLACEHOLDER:
            log.warning(
                "the notes under %r have no block in the rewritten text: dropped", key[0] or "the title"
            )
    out = [
        line
        for key, lines in segments
        for line in (notes_block(kept[key]) if key is not None and key in kept else lines)
    ]
    return "\n".join(out) + ("\n" if new.endswith("\n") else "")
