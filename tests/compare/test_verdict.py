"""The verdict table of ``docs/objectives.md`` is what ``python -m analysis.objectives`` prints."""

from __future__ import annotations

from _repo import ROOT

from analysis.objectives import markdown, verdict_rows


def test_docs_verdict_is_regenerated_by_its_command():
    text = (ROOT / "docs/objectives.md").read_text()
    start = text.index("<!-- verdict:start -->\n") + len("<!-- verdict:start -->\n")
    end = text.index("<!-- verdict:end -->")
    assert text[start:end].strip() == markdown(verdict_rows()).strip()
