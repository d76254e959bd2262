"""The documentation site, opened in a real browser: headless Chromium (Debian's ``chromium``).

Every HTML page of the built site (``make docs``'s build, shared with tests/test_docs.py through
the session fixture ``docs_site``) is loaded in one browser, driven over the DevTools pipe by
tests/browser.py (standard library only). Each page must load with a title, show every picture
(decoded: ``complete`` and ``naturalWidth > 0``), load every local style sheet, script and picture,
throw no JavaScript error, and each of its internal links must reach an existing file of the site
and, with a ``#fragment``, an element with that id. Unlike the static check of tests/test_docs.py,
this catches pictures that exist but do not decode, resources that only the browser requests, and
ids that scripts add or remove.

Without a browser on PATH the tests skip, except where ``CI=true``: there a missing browser fails
(this project's CI machine has Debian's chromium). the checker itself (tests/browser.py) is
tested on a two-page site with planted breakages, so a checker that sees nothing cannot pass.
"""
from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser import BROWSER_NAMES, BrowserTimeout, Chromium, check_site, file_url_path, find_chromium

# a 1x1 GIF: the smallest picture every browser decodes
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


def in_ci() -> bool:
    """Whether this runs in CI (``CI=true``, as CI services set it), where the browser must be present."""
    return os.environ.get("CI", "").strip().lower() == "true"


def chromium_or_skip() -> str:
    """The browser to use; without one, skip, or fail when :func:`in_ci` (a skip there would hide the check)."""
    executable = find_chromium()
    if executable is None:
        reason = (f"no headless browser: none of {', '.join(BROWSER_NAMES)} is on PATH "
                  "(Debian: apt-get install chromium)")
        if in_ci():
            pytest.fail(f"{reason}; CI=true, where the docs must be checked in a browser, so this fails")
        pytest.skip(reason)
    return executable


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    """One headless browser for every test of this file."""
    with Chromium(chromium_or_skip()) as browser:
        yield browser


def test_every_page_loads_with_its_pictures_links_and_anchors(docs_site: Path, chromium: Chromium):
    report = check_site(docs_site, chromium)
    assert not report.problems, "the browser found broken pages:\n" + "\n".join(report.problems)
    names = {page.relative_to(docs_site.resolve()).as_posix() for page in report.pages}
    assert len(names) >= 10
    # Sphinx's own pages are checked too: they need only their local scripts
    assert {"index.html", "genindex.html", "search.html", "py-modindex.html"} <= names
    pictures = [image for page in report.pages.values() for image in page.images if "/_images/" in image["src"]]
    assert pictures and all(image["naturalWidth"] > 0 for image in pictures)  # the check saw the pictures


def test_the_search_page_finds_a_documented_class(docs_site: Path, chromium: Chromium):
    tab = chromium.new_tab()
    page = tab.visit((docs_site / "search.html").as_uri() + "?q=NTXentLoss")
    hits = tab.evaluate("""(async () => {
      for (let waited = 0; waited < 10000; waited += 100) {
        const hits = document.querySelectorAll("#search-results li");
        if (hits.length) return Array.from(hits, li => [li.textContent, li.querySelector("a").href]);
        await new Promise(done => setTimeout(done, 100));
      }
      return [];
    })()""")
    assert any("NTXentLoss" in text for text, _ in hits), f"search.html?q=NTXentLoss shows no result: {hits}"
    assert all(file_url_path(href).is_file() for _, href in hits), hits
    tab.collect_errors(page)
    # Sphinx's search then fetch()es each hit's page for a summary, which a browser refuses between
    # file:// URLs (the summaries show where the site is served over HTTP), and searchtools.js does
    # not catch the rejection: those errors are expected here, and only those.
    errors = [error for error in page.errors
              if not ("Access to fetch at 'file://" in error and "CORS" in error)
              and not ("Failed to fetch" in error and "searchtools.js" in error)]
    failed = [(url, why) for url, why in page.failed_loads if not (url.endswith(".html") and why == "net::ERR_FAILED")]
    assert page.loaded and not errors and not failed, f"search.html?q=NTXentLoss: {errors} {failed}"


def write_site(root: Path, index: str, other: str = '<h1 id="there">There</h1><a href="index.html">home</a>',
               index_title: str = "index.html") -> Path:
    """A two-page site: ``index.html`` (body ``index``) and ``other.html`` (body ``other``, titled so),
    and a good picture, ``img/ok.gif``."""
    (root / "img").mkdir(parents=True)
    (root / "img" / "ok.gif").write_bytes(PIXEL)
    for name, title, body in (("index.html", index_title, index), ("other.html", "other.html", other)):
        (root / name).write_text(f"<!doctype html><html><head><title>{title}</title></head>"
                                 f"<body>{body}</body></html>", encoding="utf-8")
    return root


def test_the_checker_reports_a_missing_picture_a_broken_link_and_a_broken_anchor(tmp_path: Path, chromium: Chromium):
    site = write_site(tmp_path / "site", index="""
        <img src="img/ok.gif" alt="fine"> <img src="img/missing.png" alt="broken picture">
        <a href="other.html#there">fine</a> <a href="other.html">fine</a> <a href="#top">fine</a>
        <a href="https://example.org/">external, not followed</a>
        <a href="gone.html">broken link</a> <a href="other.html#nowhere">broken anchor</a>""")
    report = check_site(site, chromium)
    assert report.problems == [
        "index.html: picture img/missing.png is not shown (net::ERR_FILE_NOT_FOUND)",
        "index.html: broken link to gone.html (no such file)",
        "index.html: broken link to other.html#nowhere (no element with id 'nowhere' on that page)",
    ]
    assert report.pages[site.resolve() / "other.html"].title == "other.html"


def test_the_checker_reports_what_only_a_browser_sees(tmp_path: Path, chromium: Chromium):
    (tmp_path / "outside.html").write_text("<title>outside</title>")
    site = write_site(tmp_path / "site", index="""
        <link rel="stylesheet" href="style.css">
        <img src="img/ok.gif"> <img src="img/not-a-picture.png">
        <a href="../outside.html">leaves the site</a>
        <script>document.getElementById("there").id = "moved";</script>""",
        other='<h1 id="x"></h1><script>null.property;</script>', index_title="")
    (site / "img" / "not-a-picture.png").write_text("a file that exists but does not decode")
    report = check_site(site, chromium)
    assert report.problems == [
        "index.html: the page has no title",
        "index.html: picture img/not-a-picture.png is not shown (not a decodable picture)",
        "index.html: failed to load style.css (net::ERR_FILE_NOT_FOUND)",
        "index.html: uncaught exception: TypeError: Cannot set properties of null (setting 'id') at "
        f"{(site / 'index.html').resolve().as_uri()}:5",
        f"index.html: broken link to {(tmp_path / 'outside.html').resolve()} (outside the site)",
        "other.html: uncaught exception: TypeError: Cannot read properties of null (reading 'property') at "
        f"{(site / 'other.html').resolve().as_uri()}:1",
    ]


def test_without_a_browser_the_tests_skip_except_in_ci(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        chromium_or_skip()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="chromium"):
        chromium_or_skip()


def test_a_wait_that_runs_out_says_what_it_waited_for(chromium: Chromium):
    with pytest.raises(BrowserTimeout, match="within 0.2 s while waiting for the event Page.neverFired"):
        chromium.wait_event("Page.neverFired", timeout=0.2)
