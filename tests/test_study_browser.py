"""Reader study in a real browser: headless Debian `chromium` driven through `chromedriver` (raw W3C WebDriver
HTTP calls, no extra package). Skipped when chromium is missing, except in CI (`.ci/run` sets
LDSR_REQUIRE_BROWSER=1 and installs it), where a missing browser fails the test.

Run as a script to take the rating page's screenshot: `python tests/test_study_browser.py STUDY OUT.png`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_study_server import running_server  # noqa: E402

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,760"]  # fmt: skip


def _browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebDriver:
    """The few W3C WebDriver commands the test needs, over HTTP."""

    def __init__(self, url: str) -> None:
        self.url, self.session = url, ""

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"webdriver {method} {path}: {e.code} {e.read()[:500]!r}") from e

    def s(self, method: str, path: str, body: Any = None) -> Any:
        return self.call(method, f"/session/{self.session}{path}", body)

    def js(self, script: str, *args: Any) -> Any:
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def element(self, css: str) -> str:
        found = self.s("POST", "/element", {"using": "css selector", "value": css})
        return str(next(iter(found.values())))

    def key(self, char: str) -> None:
        self.s("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": char}, {"type": "keyUp", "value": char}]}]})  # fmt: skip

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; page: {self.js('return document.body.innerText')!r}"
                )
            time.sleep(0.05)


@contextmanager
def chrome(chromium: str, driver: str) -> Iterator[WebDriver]:
    """A chromedriver process and one headless chromium session with a fresh profile."""
    port = _free_port()
    proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    profile = tempfile.mkdtemp(prefix="ldsr-chromium-")
    wd = WebDriver(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if wd.call("GET", "/status").get("ready"):
                    break
            except (OSError, AssertionError):
                pass
            assert time.monotonic() < deadline, "chromedriver did not start"
            time.sleep(0.1)
        caps = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium, "args": [*CHROME_FLAGS, f"--user-data-dir={profile}"]}}  # fmt: skip
        wd.session = wd.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]
        yield wd
    finally:
        if wd.session:
            try:
                wd.call("DELETE", f"/session/{wd.session}")
            except (OSError, AssertionError):
                pass
        proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


def _done(wd: WebDriver) -> int:
    return int(wd.js("return Number(document.body.dataset.done)"))


def _ready(wd: WebDriver) -> bool:
    return bool(wd.js("return document.body.dataset.ready === '1'"))


def rate_in_browser(wd: WebDriver, base: str, name: str, scores: list[int]) -> None:
    """Open the page, join as `name`, rate len(scores) trials with the keys, reload, check the page resumed."""
    wd.s("POST", "/url", {"url": base + "/"})
    wd.wait("the join form", lambda: not wd.js("return document.getElementById('join').hidden"))
    wd.s("POST", f"/element/{wd.element('#name')}/value", {"text": name})
    wd.s("POST", f"/element/{wd.element('#join-button')}/click", {})
    for i, score in enumerate(scores):
        wd.wait(f"trial {i}", lambda i=i: _ready(wd) and _done(wd) == i)
        wd.key(str(score))
    wd.wait("the last rating saved", lambda: _ready(wd) and _done(wd) == len(scores))
    wd.s("POST", "/refresh", {})
    wd.wait("the page resumed", lambda: _ready(wd) and _done(wd) == len(scores))
    text = wd.js("return document.getElementById('progress-text').textContent")
    assert text.startswith(f"{len(scores)} / "), text


def test_rate_five_trials_with_the_keyboard_and_reload(tmp_path: Path) -> None:
    from ldsr.study import create_study
    from ldsr.study.store import read_ratings
    from test_study import make_report

    found = _browser()
    if found is None:
        message = "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("LDSR_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    study = create_study(make_report(tmp_path), tmp_path / "study", raters=2, repeats=2, seed=4)
    scores = [3, 1, 4, 2, 4]
    with running_server(study.root) as (_, base), chrome(*found) as wd:
        rate_in_browser(wd, base, "Rita", scores)
        # the synchronised view: zooming one pane zooms the other the same way
        box = wd.js("const e = document.getElementById('view-cand').getBoundingClientRect(); return [e.x, e.y];")
        scroll = {"type": "scroll", "x": int(box[0]) + 40, "y": int(box[1]) + 40, "deltaX": 0, "deltaY": -300}
        wd.s("POST", "/actions", {"actions": [{"type": "wheel", "id": "wheel", "actions": [scroll]}]})
        transforms = wd.js("return [document.getElementById('img-ref').style.transform, "
                           "document.getElementById('img-cand').style.transform]")  # fmt: skip
        assert transforms[0] == transforms[1] and "scale" in transforms[0]
    ratings = read_ratings(study.root / "ratings.sqlite")
    assert [(r.label, r.position, r.score) for r in ratings] == [("Rita", i, s) for i, s in enumerate(scores)]
    assert [r.trial for r in ratings] == list(study.orders[0][:5])


if __name__ == "__main__":  # python tests/test_study_browser.py STUDY OUT.png
    found = _browser()
    assert found is not None, "install chromium and chromium-driver"
    with running_server(Path(sys.argv[1])) as (_, base), chrome(*found) as wd:
        rate_in_browser(wd, base, "Dr. Example", [3, 2])
        time.sleep(0.3)
        Path(sys.argv[2]).write_bytes(base64.b64decode(wd.s("GET", "/screenshot")))
    print("wrote", sys.argv[2])
