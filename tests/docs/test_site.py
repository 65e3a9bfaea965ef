"""The documentation site builds without a warning and renders in a real browser.

* ``mkdocs build --strict`` into a temporary folder (``mkdocs.yml`` at the root;
  the ``docs`` extra installs MkDocs, Material, mkdocstrings and markdown-exec):
  exit status 0 and no ``WARNING`` line -- no broken link, no unresolved
  reference, no example block that raised;
* the API pages hold an entry for each public function they must document;
* headless Chromium (Debian's ``chromium``) opens the main pages, served on
  127.0.0.1, and every ``<img>`` on them has loaded with a non-zero natural
  width.  Chromium runs one page, ``/__check__.html``, that the test server
  makes up: it loads each page in an iframe and writes what it finds (title,
  images, the ids of API entries) into its own DOM, which ``--dump-dom``
  prints.

Skipped, with the reason, when MkDocs or Chromium is not installed.  The build
takes about 5 s and the browser about 5 s on a busy 2-core machine.
"""

from __future__ import annotations

import functools
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# page -> (the least number of figures it shows, API entries it must list)
PAGES: dict[str, tuple[int, tuple[str, ...]]] = {
    "": (0, ()),
    "guide/": (0, ()),
    "theory/": (0, ()),
    "gallery/": (10, ()),
    "objectives/": (1, ()),
    "audit/": (1, ()),
    "tour/": (1, ()),
    "reference/objectives/": (
        0,
        ("tilt.objectives.sd_optimum", "tilt.objectives.sd_sequence", "tilt.objectives.rl_optimum"),
    ),
    "reference/measures/": (0, ("tilt.measures.measure", "tilt.measures.Measures")),
    "reference/engines/": (0, ("tilt.engines.build_instance", "tilt.engines.EngineInstance")),
    "reference/space/": (0, ("tilt.space.enumerate_rollouts",)),
    "reference/context/": (0, ("tilt.context.make_context", "tilt.context.ContextModel")),
    "reference/train/": (0, ("tilt.train.train",)),
}

# Loads every page of the query in an iframe (same origin) and, once all have
# loaded, writes one JSON report per page into <pre id="report">.
CHECK_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>check</title></head><body>
<pre id="report">pending</pre>
<script>
const pages = JSON.parse(decodeURIComponent(location.search.slice(1)));
const reports = {};
let left = pages.length;
for (const page of pages) {
  const frame = document.createElement("iframe");
  frame.style.width = "1280px";
  frame.style.height = "900px";
  frame.onload = () => {
    const doc = frame.contentDocument;
    const article = doc.querySelector("article") || doc.body;
    reports[page] = {
      title: doc.title,
      h1: (article.querySelector("h1") || {textContent: ""}).textContent.trim(),
      text: article.textContent.length,
      images: [...doc.querySelectorAll("article img")].map(img => ({
        src: img.getAttribute("src").slice(0, 80),
        complete: img.complete,
        width: img.naturalWidth,
      })),
      ids: [...doc.querySelectorAll("[id^='tilt.']")].map(e => e.id),
    };
    if (--left === 0) {
      document.getElementById("report").textContent = JSON.stringify(reports);
    }
  };
  frame.src = "/" + page;
  document.body.appendChild(frame);
}
</script>
</body></html>
"""


def _require_mkdocs() -> None:
    modules = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers", "markdown_exec")
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f'{", ".join(missing)} not installed: pip install -e ".[docs]" builds the site')


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module with ``mkdocs build --strict``."""
    _require_mkdocs()
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    warnings = [line for line in log.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert not warnings, "\n".join(warnings)
    return out


def test_site_builds_strict(site: Path) -> None:
    assert (site / "index.html").is_file()
    home = (site / "index.html").read_text(encoding="utf-8")
    # README.md is the home page, and its links into docs/ point at the site's pages
    assert "The paper's claims, one by one" in html.unescape(home)
    assert 'href="theory/"' in home
    assert 'href="docs/' not in home
    # the figures kept outside docs/ are published
    assert (site / "figures" / "out" / "fig1_ratios.png").is_file()


def test_api_pages_list_the_public_functions(site: Path) -> None:
    for page, (_, names) in PAGES.items():
        text = (site / page / "index.html").read_text(encoding="utf-8")
        ids = set(re.findall(r'id="(tilt\.[\w.]+)"', text))
        assert set(names) <= ids, f"{page}: missing {sorted(set(names) - ids)}"
    # no Sphinx role is left raw in a rendered docstring (docs/griffe_roles.py)
    for page in (site / "reference").glob("*/index.html"):
        text = re.sub(r"<details.*?</details>", "", page.read_text(encoding="utf-8"), flags=re.S)
        assert not re.search(r":(func|class|mod|data|meth|attr):`", text), page


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no headless Chromium: apt-get install -y chromium")


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?", 1)[0] == "/__check__.html":
            body = CHECK_PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def served(site: Path) -> Iterator[str]:
    """The site on 127.0.0.1, at a free port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_main_pages_render_with_their_figures(served: str, tmp_path: Path) -> None:
    browser = _browser()
    query = json.dumps(list(PAGES), separators=(",", ":"))
    url = f"{served}/__check__.html?{query}"
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r'<pre id="report">(.*?)</pre>', proc.stdout, flags=re.S)
    assert match, proc.stdout[-2000:]
    assert match.group(1) != "pending", "the pages did not finish loading"
    reports = json.loads(html.unescape(match.group(1)))
    assert set(reports) == set(PAGES)
    for page, (figures, names) in PAGES.items():
        report = reports[page]
        assert report["h1"], f"{page}: no heading"
        assert report["title"].endswith("tilt"), (page, report["title"])
        assert report["text"] > 500, f"{page}: {report['text']} characters of text"
        broken = [img for img in report["images"] if not (img["complete"] and img["width"] > 0)]
        assert not broken, f"{page}: images that did not load: {broken}"
        assert len(report["images"]) >= figures, (page, report["images"])
        assert set(names) <= set(report["ids"]), (page, sorted(set(names) - set(report["ids"])))
