"""MkDocs hooks for tilt's site (listed in ``mkdocs.yml``; not a page of the site).

The Markdown files are written to be read on the repository too, so they link
to files outside ``docs/``: ``README.md`` links to ``docs/theory.md``, the pages
show ``../figures/out/fig1_ratios.png``.  Two hooks make those links work on
the site without changing the sources:

* ``on_files`` adds the home page, ``index.md``, made from ``README.md``, and
  publishes the committed figures (``figures/out/*.png``,
  ``benchmarks/**/*.png``) at the same paths under the site root;
* ``on_page_markdown`` rewrites a relative link that leaves ``docs/`` to the
  published file it names (``../README.md`` is the home page), and drops the
  backslash GitHub needs before a ``|`` inside code in a table cell
  (Python-Markdown's tables do not split cells inside code, and would show it).

A link to any other file outside ``docs/`` is left alone, so ``mkdocs build
--strict`` reports it.  ``on_config`` puts this checkout first on ``sys.path``,
so the code blocks run at build time (markdown-exec) import the ``tilt`` the
site documents, not another installed copy.
"""

from __future__ import annotations

import posixpath
import re
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("figures/out/*.png", "benchmarks/**/*.png")
CODE_SPAN = re.compile(r"`[^`\n]*`")
# an inline link or image target: ](target) or ](target "title"), no spaces in target
LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\s+\"[^\"]*\")?(\))")


def _published() -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for g in FIGURES for p in ROOT.glob(g))


def _rewrite(markdown: str, page_dir: str) -> str:
    """Point links that leave ``docs/`` (``page_dir`` is the page's folder under it) at the site."""
    published = set(_published())

    def one(match: re.Match[str]) -> str:
        opening, target, anchor, title, closing = match.groups()
        if "://" in target or target.startswith(("/", "mailto:")):
            return match.group(0)
        in_repo = posixpath.normpath(posixpath.join("docs", page_dir, target))
        if in_repo.startswith("docs/"):
            return match.group(0)
        if in_repo == "README.md":
            site_path = "index.md"
        elif in_repo in published:
            site_path = in_repo
        else:
            return match.group(0)
        new = posixpath.relpath(site_path, page_dir or ".")
        return f"{opening}{new}{anchor or ''}{title or ''}{closing}"

    return LINK.sub(one, markdown)


def on_config(config: Any) -> Any:
    if str(ROOT) not in sys.path[:1]:
        sys.path.insert(0, str(ROOT))
    return config


def _table_code(markdown: str) -> str:
    """A backslash-escaped pipe inside code spans of table rows becomes a pipe."""
    lines = markdown.split("\n")
    for i, line in enumerate(lines):
        if line.lstrip().startswith("|") and "\\|" in line:
            lines[i] = CODE_SPAN.sub(lambda m: m.group(0).replace("\\|", "|"), line)
    return "\n".join(lines)


def on_files(files: Files, config: Any) -> Files:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    def into_docs(match: re.Match[str]) -> str:
        # README.md sits one folder above docs/: its links into docs/ lose the prefix
        if match.group(2).startswith("docs/"):
            return match.group(0).replace("](docs/", "](", 1)
        return match.group(0)

    home = LINK.sub(into_docs, readme)
    files.append(File.generated(config, "index.md", content=home))
    for path in _published():
        files.append(File.generated(config, path, abs_src_path=str(ROOT / path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    markdown = _table_code(markdown)
    if page.file.src_uri == "index.md":
        return markdown
    return _rewrite(markdown, posixpath.dirname(page.file.src_uri))
