"""The format spec (docs/format.md) and the event table must agree."""

import re
from pathlib import Path

from pytrace import events, wire

SPEC = Path(__file__).resolve().parent.parent / "docs" / "format.md"


def test_event_list_in_spec_is_generated_from_the_table():
    text = SPEC.read_text(encoding="utf-8")
    match = re.search(r"<!-- event-table:start -->\n(.*?)\n<!-- event-table:end -->", text, re.S)
    assert match, "docs/format.md lost its event-table markers"
    assert match.group(1) == events.markdown_table(), (
        "docs/format.md's event list is stale: replace the text between the event-table markers "
        "with pytrace.events.markdown_table()")


def test_header_bytes_match_the_spec():
    assert wire.HEADER[:8].hex(" ") == "50 59 54 52 41 43 45 00"
    assert wire.HEADER[8:10] == (1).to_bytes(2, "little")
    assert wire.HEADER[10:] == bytes(6)
    assert "`50 59 54 52 41 43 45 00`" in SPEC.read_text(encoding="utf-8")


def test_every_special_layout_is_documented():
    text = SPEC.read_text(encoding="utf-8")
    for name in ("Batch", "Frequency", "Meta", "Footer", "String", "Func", "Stack"):
        assert f"**{name}**" in text, f"docs/format.md does not describe the {name} layout"
