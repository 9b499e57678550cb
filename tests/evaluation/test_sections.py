from voxgate.evaluation.sections import keep_foreign, replace_section, sections, table_row

LIVE = "## Live streams"


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
