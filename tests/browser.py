"""A page as a person sees it: headless Chromium (Debian's `chromium`), optionally with no network at all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# No host name resolves and every proxied request goes to a closed port on loopback: a page that
# needs anything from the network does not get it, whatever network the machine has.
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
# A developer without chromium skips the browser tests only by saying so (this variable set to 1);
# CI, which installs chromium, never skips them.
SKIP_VARIABLE = "EDGECOMPRESS_SKIP_BROWSER_TESTS"


def chromium() -> str:
    """Chromium's executable. Missing: a failure, unless skipped on purpose outside CI.

    A skip nobody asked for would hide a broken page (or a CI image without chromium), as the
    PostgreSQL fixture's skip would (tests/integration/conftest.py fails it in CI likewise).
    """
    found = shutil.which("chromium")
    if found:
        return found
    reason = "needs Debian's chromium (apt-get install chromium; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run it")
    if os.environ.get(SKIP_VARIABLE) != "1":
        pytest.fail(f"{reason}; or set {SKIP_VARIABLE}=1 to skip the browser tests on purpose")
    pytest.skip(f"{reason}; {SKIP_VARIABLE}=1")


def dump_dom(url: str, offline: bool = False, budget_ms: int = 20000) -> str:
    """The page's DOM after its scripts ran (up to `budget_ms` of the page's own time), in a fresh profile."""
    executable = chromium()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        result = subprocess.run(
            [
                executable,
                *FLAGS,
                *(OFFLINE if offline else []),
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class _Marks(HTMLParser):
    """Counts the drawn shapes of Vega's SVG marks inside each element that has an id."""

    SHAPES = frozenset({"path", "rect", "line", "circle", "text", "image"})

    def __init__(self, ids: set[str]) -> None:
        super().__init__()
        self.ids = ids
        self.counts = dict.fromkeys(ids, 0)
        self._open: list[tuple[str, str | None, bool]] = []  # (tag, plot id, inside a mark group)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        plot = self._open[-1][1] if self._open else None
        in_mark = self._open[-1][2] if self._open else False
        if values.get("id") in self.ids:
            plot = values["id"]
        if tag == "g" and re.search(r"\brole-mark\b", values.get("class") or ""):
            in_mark = True
        if plot is not None and in_mark and tag in self.SHAPES:
            self.counts[plot] += 1
        if tag not in {"br", "img", "meta", "link", "input", "hr"}:
            self._open.append((tag, plot, in_mark))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break


def drawn_marks(dom: str, ids: set[str]) -> dict[str, int]:
    """For each element id, how many SVG shapes Vega drew in its marks (0: the plot was not drawn)."""
    parser = _Marks(ids)
    parser.feed(dom)
    return parser.counts
