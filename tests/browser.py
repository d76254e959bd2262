"""A small client for headless Chromium's DevTools protocol (CDP) over a pipe, and a site checker.

The documentation tests use it to open every page of the built site in a real browser, with no
Python dependency beyond the standard library and no network port: Chromium started with
``--remote-debugging-pipe`` reads CDP commands from its file descriptor 3 and writes replies and
events to its file descriptor 4, each message a JSON object followed by a NUL byte.

Usage::

    with Chromium(find_chromium()) as browser:
        report = browser.new_tab().visit("file:///path/to/page.html")
        print(report.title, report.images, report.failed_loads)
        problems = check_site(Path("docs/_build/html"), browser).problems

Every wait (the browser's start, a command's reply, a page's load event) gives up after
``timeout`` seconds (30 by default) with a :class:`BrowserTimeout` naming what it waited for and
the end of the browser's own log. The browser quits when its end of the pipe closes, so a test
process that dies leaves no browser behind.

How the pipe reaches fds 3 and 4: the child ends of the two pipes are moved to descriptors >= 10
here, passed to the child with ``pass_fds``, and a tiny ``python -I -c`` launcher in the child
``dup2``-s them onto 3 and 4 and then ``exec``-s Chromium (so the :class:`subprocess.Popen`
process *is* the browser). ``preexec_fn`` would do the same without the launcher, but it runs
Python code between ``fork`` and ``exec``, which is not safe in a process with threads (the test
process has torch's); the launcher costs one interpreter start (tens of milliseconds).
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

#: Names under which a Chromium-like browser is looked up on ``PATH``, in order.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: Default limit, in seconds, of every wait on the browser.
TIMEOUT = 30.0

# Run in the child by ``python -I -c``: put the two pipe ends (at descriptors >= 10, so neither
# ``dup2`` can overwrite the other) on 3 and 4, close the originals and become the browser.
_LAUNCHER = (
    "import os, sys\n"
    "commands, replies = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.dup2(commands, 3); os.dup2(replies, 4)\n"
    "os.close(commands); os.close(replies)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)

# Evaluated in each page once its load event has fired: waits (at most 10 s) for pictures still
# loading (``loading="lazy"`` ones are made eager, as a headless window may never scroll to them),
# then returns what the checks need. ``a.href`` is the link resolved against the page's URL.
_COLLECT = """(async () => {
  const images = Array.from(document.images);
  for (const img of images) { if (img.loading === "lazy") img.loading = "eager"; }
  const settled = img => img.complete ? null : new Promise(done => {
    img.addEventListener("load", done, {once: true});
    img.addEventListener("error", done, {once: true});
  });
  await Promise.race([Promise.all(images.map(settled)), new Promise(done => setTimeout(done, 10000))]);
  return {
    url: document.URL,
    readyState: document.readyState,
    title: document.title,
    images: images.map(img => ({src: img.currentSrc || img.src || img.getAttribute("src") || "",
                                complete: img.complete, naturalWidth: img.naturalWidth})),
    links: Array.from(document.querySelectorAll("a[href]"), a => a.href),
    ids: Array.from(document.querySelectorAll("[id]"), e => e.id)
           .concat(Array.from(document.querySelectorAll("a[name]"), a => a.name)),
  };
})()"""


class BrowserError(RuntimeError):
    """The browser failed: it exited, closed the pipe, or answered a command with an error."""


class BrowserTimeout(BrowserError):
    """A wait on the browser ran past its limit."""


def find_chromium() -> str | None:
    """Return the path of the first of :data:`BROWSER_NAMES` found on ``PATH``, or ``None``."""
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    """What the browser saw on one page.

    Attributes:
        url: the URL visited.
        loaded: whether navigation succeeded and the load event fired.
        error: why the page did not load (``""`` when it did).
        title: ``document.title``.
        images: one dict per ``<img>``: ``src`` (resolved URL), ``complete``, ``naturalWidth``.
        links: every ``a[href]``, resolved to an absolute URL (``a.href``).
        ids: the element ids (and ``<a name>`` values) of the page: the fragments it can be linked to.
        errors: uncaught JavaScript exceptions, and console or log entries of level error (failed
            resource loads are in ``failed_loads`` instead).
        failed_loads: ``(url, reason)`` of every resource (style sheet, script, picture, ...) the
            page failed to load, cancellations excluded.
    """

    url: str
    loaded: bool = False
    error: str = ""
    title: str = ""
    images: list[dict[str, Any]] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    failed_loads: list[tuple[str, str]] = field(default_factory=list)


class Chromium:
    """A headless Chromium driven over the DevTools pipe; use it as a context manager.

    Args:
        executable: the browser to start (default: :func:`find_chromium`).
        timeout: the limit, in seconds, of every wait on the browser.
        args: extra command-line switches.
    """

    def __init__(self, executable: str | None = None, timeout: float = TIMEOUT, args: Iterable[str] = ()) -> None:
        found = executable or find_chromium()
        if found is None:
            raise BrowserError(f"no browser found on PATH (looked for {', '.join(BROWSER_NAMES)})")
        self.executable = found
        self.timeout = timeout
        self.extra_args = list(args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._log_path: Path | None = None
        self._write_fd = self._read_fd = -1
        self._buffer = bytearray()
        self._events: list[dict[str, Any]] = []
        self._next_id = 0

    # -- process ------------------------------------------------------------------------------

    def start(self) -> Chromium:
        """Start the browser and wait until it answers (at most ``timeout`` seconds)."""
        self._profile = tempfile.TemporaryDirectory(prefix="cdp-profile-", ignore_cleanup_errors=True)
        self._log_path = Path(self._profile.name) / "browser.log"
        commands_r, commands_w = os.pipe()
        replies_r, replies_w = os.pipe()
        child_r = fcntl.fcntl(commands_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(replies_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(commands_r)
        os.close(replies_w)
        args = [self.executable, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                f"--user-data-dir={Path(self._profile.name) / 'profile'}", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio", "--window-size=1280,900",
                *self.extra_args, "about:blank"]
        try:
            with open(self._log_path, "wb") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-c", _LAUNCHER, str(child_r), str(child_w), *args],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    pass_fds=(child_r, child_w), start_new_session=True)
        except BaseException:
            for fd in (commands_w, replies_r):
                os.close(fd)
            self._profile.cleanup()
            raise
        finally:
            os.close(child_r)
            os.close(child_w)
        self._write_fd, self._read_fd = commands_w, replies_r
        try:
            self.send("Browser.getVersion")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Ask the browser to quit, kill it (and its helper processes) if it does not, clean up."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    self._write({"id": self._take_id(), "method": "Browser.close"})
                except OSError:
                    pass
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            try:  # the renderer and utility processes share the browser's new session's group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        for fd in (self._write_fd, self._read_fd):
            if fd >= 0:
                os.close(fd)
        self._write_fd = self._read_fd = -1
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the browser's own output (stdout and stderr), for error messages."""
        try:
            return self._log_path.read_text(errors="replace")[-chars:] if self._log_path else ""
        except OSError:
            return ""

    # -- protocol -----------------------------------------------------------------------------

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _write(self, message: dict[str, Any]) -> None:
        data = memoryview(json.dumps(message).encode() + b"\0")
        while data:
            data = data[os.write(self._write_fd, data):]

    def _read(self, deadline: float, limit: float, waiting_for: str) -> dict[str, Any]:
        """The next message from the browser, waiting at most until ``deadline`` (``limit`` s after the wait began)."""
        while True:
            end = self._buffer.find(b"\0")
            if end >= 0:
                message = json.loads(self._buffer[:end])
                del self._buffer[:end + 1]
                return message
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserTimeout(f"nothing from the browser within {limit:g} s while waiting for "
                                     f"{waiting_for}; its log ends with:\n{self.log_tail()}")
            if select.select([self._read_fd], [], [], left)[0]:
                chunk = os.read(self._read_fd, 1 << 20)
                if not chunk:
                    code = self._proc.poll() if self._proc else None
                    raise BrowserError(f"the browser closed the DevTools pipe (exit status {code}) while waiting "
                                       f"for {waiting_for}; its log ends with:\n{self.log_tail()}")
                self._buffer += chunk

    def send(self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Send one command and return its result; events read meanwhile are kept for :meth:`wait_event`.

        Raises:
            BrowserError: the browser answered with an error, or exited.
            BrowserTimeout: no answer within ``timeout`` (default: the browser's) seconds.
        """
        if self._proc is None:
            raise BrowserError("the browser is not running")
        message: dict[str, Any] = {"id": self._take_id(), "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        try:
            self._write(message)
        except OSError as error:  # BrokenPipeError: the browser is gone
            raise BrowserError(f"cannot send {method} to the browser ({error}); its log ends with:\n"
                               f"{self.log_tail()}") from error
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            reply = self._read(deadline, limit, f"the reply to {method}")
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    def wait_event(self, method: str, session_id: str | None = None,
                   accept: Callable[[dict[str, Any]], bool] | None = None, timeout: float | None = None
                   ) -> dict[str, Any]:
        """Wait for (and consume) the first event ``method`` of ``session_id`` that ``accept`` takes.

        Raises:
            BrowserTimeout: none came within ``timeout`` (default: the browser's) seconds.
        """
        def matches(event: dict[str, Any]) -> bool:
            return (event.get("method") == method and event.get("sessionId") == session_id
                    and (accept is None or accept(event.get("params", {}))))

        for index, event in enumerate(self._events):
            if matches(event):
                return self._events.pop(index)
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            event = self._read(deadline, limit, f"the event {method}")
            if matches(event):
                return event
            if "method" in event:
                self._events.append(event)

    def take_events(self, session_id: str | None) -> list[dict[str, Any]]:
        """Remove and return the events of ``session_id`` received so far."""
        taken = [event for event in self._events if event.get("sessionId") == session_id]
        self._events = [event for event in self._events if event.get("sessionId") != session_id]
        return taken

    def new_tab(self) -> Tab:
        """Open a new tab (a page target), attached with a flat session, its event domains enabled."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session_id=session)
        return Tab(self, target, session)


class Tab:
    """One page target of a :class:`Chromium`, reached through its flat ``sessionId``."""

    def __init__(self, browser: Chromium, target_id: str, session_id: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id
        self._request_urls: dict[str, str] = {}  # requestId -> URL, for the page shown now

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a command to this tab and return its result."""
        return self.browser.send(method, params, session_id=self.session_id)

    def visit(self, url: str) -> PageReport:
        """Load ``url``, wait for its load event and return what the page shows (see :class:`PageReport`)."""
        report = PageReport(url)
        self.browser.take_events(self.session_id)  # what the previous page left behind
        self._request_urls.clear()
        navigation = self.send("Page.navigate", {"url": url})
        if navigation.get("errorText"):
            report.error = f"navigation failed: {navigation['errorText']}"
            self.browser.take_events(self.session_id)
            return report
        want = url.split("#", 1)[0]
        deadline = time.monotonic() + self.browser.timeout
        while True:  # a late load event of the previous document would not match the URL: wait again
            left = deadline - time.monotonic()
            try:
                self.browser.wait_event("Page.loadEventFired", self.session_id, timeout=max(left, 0.0))
            except BrowserTimeout as timeout:
                raise BrowserTimeout(f"{url} did not fire its load event within {self.browser.timeout:g} s"
                                     ) from timeout
            seen = self.evaluate(_COLLECT)
            if seen["url"].split("#", 1)[0] == want and seen["readyState"] == "complete":
                break
        report.loaded = True
        report.title = seen["title"]
        report.images = seen["images"]
        report.links = seen["links"]
        report.ids = set(seen["ids"])
        self.collect_errors(report)
        return report

    def evaluate(self, expression: str) -> Any:
        """Evaluate a JavaScript expression in the page (a promise is awaited); return its value as JSON."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"evaluating the page's contents failed: {_describe(result['exceptionDetails'])}")
        return result["result"].get("value")

    def collect_errors(self, report: PageReport) -> PageReport:
        """Add to ``report`` the errors and failed loads of the page received since the last call.

        :meth:`visit` calls it once the page has loaded; call it again after making the page do
        something (what its scripts do after the load event is not seen otherwise).
        """
        for event in self.browser.take_events(self.session_id):
            method, params = event["method"], event.get("params", {})
            if method == "Network.requestWillBeSent":
                self._request_urls[params["requestId"]] = params["request"]["url"]
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                url = self._request_urls.get(params["requestId"], "?")
                report.failed_loads.append((url, params.get("errorText", "")))
            elif method == "Runtime.exceptionThrown":
                report.errors.append(f"uncaught exception: {_describe(params['exceptionDetails'])}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
                report.errors.append(f"console.{params['type']}: {text}")
            elif method == "Log.entryAdded":
                entry = params["entry"]
                # a failed load is also logged ("Failed to load resource"): Network.loadingFailed has it
                if entry.get("level") == "error" and entry.get("source") != "network":
                    report.errors.append(f"{entry.get('source')} error: {entry.get('text')} ({entry.get('url', '')})")
        return report


def _describe(details: dict[str, Any]) -> str:
    """One line for a CDP ``ExceptionDetails``: the exception's description, where it was thrown."""
    exception = details.get("exception", {})
    text = exception.get("description") or details.get("text", "")
    where = f"{details.get('url', '')}:{details.get('lineNumber', 0) + 1}" if details.get("url") else ""
    return f"{text.splitlines()[0] if text else '?'}{' at ' + where if where else ''}"


# -- the site checker ---------------------------------------------------------------------------


@dataclass
class SiteReport:
    """The result of :func:`check_site`: what each page showed, and every problem found, one line each."""

    pages: dict[Path, PageReport]
    problems: list[str]


def file_url_path(url: str) -> Path | None:
    """The local path of a ``file://`` URL (fragment and query dropped), or ``None`` for other URLs."""
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None
    return Path(url2pathname(parts.path))


def check_site(root: Path, browser: Chromium, pages: Iterable[Path] | None = None) -> SiteReport:
    """Open every page of a static HTML site in ``browser`` and list what is broken.

    A page is broken when it does not load or has an empty title, when one of its pictures is not
    shown (``complete`` and ``naturalWidth > 0`` after loading: missing or not decodable), when
    it fails to load a ``file://`` resource (style sheet, script, ...), when it throws an uncaught
    JavaScript exception or logs an error, and when one of its internal links (``file://`` URLs)
    leaves the site, points to no file, or has a ``#fragment`` that no element of the target page
    has as its id. External links are not followed.

    Args:
        root: the site's folder.
        browser: a started :class:`Chromium`.
        pages: the pages to open (default: every ``*.html`` under ``root``); linked pages of the
            site are opened too when a fragment must be checked.

    Returns:
        The reports per page and the problems, each naming the page (relative to ``root``) and
        the broken link, picture or resource.
    """
    root = root.resolve()
    tab = browser.new_tab()
    reports: dict[Path, PageReport] = {}

    def report_of(page: Path) -> PageReport:
        if page not in reports:
            reports[page] = tab.visit(page.as_uri())
        return reports[page]

    def show(path: Path) -> str:
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)

    problems: list[str] = []
    for page in sorted(pages if pages is not None else root.rglob("*.html")):
        page = page.resolve()
        report = report_of(page)
        name = show(page)
        if not report.loaded:
            problems.append(f"{name}: does not load ({report.error})")
            continue
        if not report.title.strip():
            problems.append(f"{name}: the page has no title")
        failed = dict(report.failed_loads)
        for image in report.images:
            if not (image["complete"] and image["naturalWidth"] > 0):
                src = image["src"]
                local = file_url_path(src)
                reason = failed.get(src) or ("still loading" if not image["complete"] else "not a decodable picture")
                problems.append(f"{name}: picture {show(local) if local else src or '(no src)'} is not shown "
                                f"({reason})")
        shown = {image["src"] for image in report.images}
        for url, reason in report.failed_loads:
            local = file_url_path(url)
            if local is not None and url not in shown:
                problems.append(f"{name}: failed to load {show(local)} ({reason})")
        problems.extend(f"{name}: {error}" for error in report.errors)
        for link in dict.fromkeys(report.links):  # in order, each once
            problem = _link_problem(link, root, report_of)
            if problem:
                problems.append(f"{name}: broken link {problem}")
    return SiteReport(reports, problems)


def _link_problem(link: str, root: Path, report_of: Callable[[Path], PageReport]) -> str:
    """Why the internal ``link`` of ``page`` is broken (``""`` when it is not, or is external)."""
    target = file_url_path(link)
    if target is None:
        return ""
    fragment = unquote(urlsplit(link).fragment)
    shown = target.relative_to(root).as_posix() if target.is_relative_to(root) else str(target)
    shown += f"#{fragment}" if fragment else ""
    if not target.is_relative_to(root):
        return f"to {shown} (outside the site)"
    if target.is_dir():
        if not (target / "index.html").is_file():
            return f"to {shown} (a folder with no index.html)"
        target = target / "index.html"
    if not target.is_file():
        return f"to {shown} (no such file)"
    if fragment and fragment.lower() != "top" and target.suffix in (".html", ".htm"):
        if fragment not in report_of(target.resolve()).ids:
            return f"to {shown} (no element with id {fragment!r} on that page)"
    return ""
