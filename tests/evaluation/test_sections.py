"""The sections of docs/accuracy.md that the evaluation tools rewrite, and the notes people write in them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from voxgate.biometrics.profile import Channel
from voxgate.evaluation import accuracy, streaming
from voxgate.evaluation.fitting import EmbeddedSet
from voxgate.evaluation.sections import (
    NOTES_CLOSE,
    NOTES_OPEN,
    NOTES_PLACEHOLDER,
    carry_notes,
    keep_foreign,
    notes,
    notes_block,
    replace_section,
    sections,
    table_row,
)

LIVE = "## Live streams"
ACCURACY_MD = Path(__file__).resolve().parents[2] / "docs" / "accuracy.md"


def _live(table: str, written: str | None = None) -> str:
    """A generated live-stream section: a table, then its notes block (the placeholder unless ``written``)."""
    block = notes_block(written) if written is not None else notes_block()
    return "\n".join([LIVE, "", table, "", *block, ""])


def test_a_section_is_replaced_in_place_or_appended() -> None:
    document = f"# Accuracy\n\nintro\n\n{LIVE}\n\nold table\n\n## Later\n\nkept\n"
    replaced = replace_section(document, LIVE, f"{LIVE}\n\nnew table\n")
    assert replaced == f"# Accuracy\n\nintro\n\n{LIVE}\n\nnew table\n\n## Later\n\nkept\n"
    assert replace_section(replaced, LIVE, f"{LIVE}\n\nnew table\n") == replaced
    appended = replace_section("# Accuracy\n\nintro\n", LIVE, f"{LIVE}\n\nx\n")
    assert appended == f"# Accuracy\n\nintro\n\n{LIVE}\n\nx\n"


def test_rewriting_the_document_keeps_another_tools_section() -> None:
    old = f"# Accuracy\n\n## Sets\n\nold sets\n\n{LIVE}\n\nlive table\n"
    new = "# Accuracy\n\n## Sets\n\nnew sets\n"
    merged = keep_foreign(old, new)
    assert sections(merged) == {"## Sets": "## Sets\n\nnew sets\n", LIVE: f"{LIVE}\n\nlive table\n"}
    assert "old sets" not in merged
    assert keep_foreign("", new) == new


def test_table_row() -> None:
    assert table_row(["a", "1.00", "–"]) == "| a | 1.00 | – |"


def test_a_written_notes_block_survives_a_rewrite_while_the_tables_change() -> None:
    written = "The EER is 1 %.\n\n- keep it"
    old = f"# Accuracy\n\nintro\n\n{_live('| EER | 1.00 |', written)}\n## Later\n\nkept\n"
    rewritten = carry_notes(old, replace_section(old, LIVE, _live("| EER | 2.00 |")))
    assert rewritten == old.replace("1.00", "2.00")
    assert notes(rewritten) == {(LIVE, 0): written}
    assert rewritten.count("The EER is 1 %.") == 1
    assert carry_notes(rewritten, rewritten) == rewritten  # rewriting again changes nothing


def test_a_section_without_notes_gets_the_placeholder() -> None:
    generated = _live("| EER | 2.00 |")
    for old in ("", "# Accuracy\n", f"# Accuracy\n\n{LIVE}\n\n| EER | 1.00 |\n\nold prose, no block\n"):
        rewritten = carry_notes(old, replace_section(old, LIVE, generated))
        assert notes(rewritten) == {(LIVE, 0): NOTES_PLACEHOLDER}
        assert "old prose" not in rewritten
    emptied = _live("| EER | 1.00 |").replace(NOTES_PLACEHOLDER, "")  # someone deleted the notes
    assert notes(carry_notes(emptied, generated)) == {(LIVE, 0): NOTES_PLACEHOLDER}


def test_notes_follow_their_heading_not_their_position() -> None:
    old = "\n".join(["## A", "", *notes_block("about A"), "", "## B", "", *notes_block("about B"), ""])
    new = "\n".join(["## B", "", "new B table", "", *notes_block(), "", "## C", "", *notes_block(), ""])
    assert notes(carry_notes(old, new)) == {("## B", 0): "about B", ("## C", 0): NOTES_PLACEHOLDER}


def test_written_notes_with_no_block_in_the_rewrite_are_named(caplog: pytest.LogCaptureFixture) -> None:
    old = _live("| t |", "measured conclusions")
    with caplog.at_level(logging.WARNING):
        assert carry_notes(old, "## Renamed\n\n| t |\n") == "## Renamed\n\n| t |\n"
    assert LIVE in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        carry_notes(_live("| t |"), "## Renamed\n")  # only the placeholder: nothing lost
    assert caplog.text == ""


def test_an_unclosed_notes_block_is_an_error_not_a_silent_loss() -> None:
    broken = f"{LIVE}\n\n{NOTES_OPEN}\n\nwritten\n"
    with pytest.raises(ValueError, match="no <!-- /notes -->"):
        carry_notes(broken, _live("| t |"))


def test_the_generators_keep_the_notes_written_in_docs_accuracy_md() -> None:
    """Both reports, rendered from no measurements, rewritten over the real document as their ``main`` does:
    every notes block of the document has its place, and its text comes through once, unchanged."""
    document = ACCURACY_MD.read_text()
    written = notes(document)
    assert set(written) == {(accuracy.SUMMARY, 0), (streaming.SECTION, 0)}
    assert all(text != NOTES_PLACEHOLDER for text in written.values())
    assert document.count(NOTES_OPEN) == document.count(NOTES_CLOSE) == 2

    def empty() -> dict[Channel, list[accuracy.Row]]:
        return {Channel.WIDEBAND: [], Channel.TELEPHONE: []}

    by_channel: dict[Channel, list[EmbeddedSet]] = {Channel.WIDEBAND: [], Channel.TELEPHONE: []}
    report = accuracy.render(accuracy.Results(by_channel, empty(), empty(), empty(), empty(), {}, {}, {}))
    assert notes(report) == {(accuracy.SUMMARY, 0): NOTES_PLACEHOLDER}
    rewritten = carry_notes(document, keep_foreign(document, report))
    assert notes(rewritten) == written

    section = streaming.render([], [], 3.0)
    assert notes(section) == {(streaming.SECTION, 0): NOTES_PLACEHOLDER}
    rewritten = carry_notes(document, replace_section(document, streaming.SECTION, section))
    assert notes(rewritten) == written
    for text in written.values():
        assert rewritten.count(text) == 1
