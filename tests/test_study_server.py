"""Reader study against a real `ldsr study serve` process (waitress): SIGKILL durability, concurrent raters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ldsr.study import create_study
from ldsr.study.store import read_ratings
from test_study import make_report


@contextmanager
def running_server(study: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start `ldsr study serve --port 0`; yield (process, base URL); kill it at the end.

    The study command group is run directly (`ldsr.cli.study.study_app`), not through `python -m ldsr`, whose
    other commands' imports cost seconds of start-up on a busy 2-core machine.
    """
    cmd = "from ldsr.cli.study import study_app; study_app(prog_name='ldsr study')"
    proc = subprocess.Popen([sys.executable, "-c", cmd, "serve", str(study), "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "serving <study> on http://127.0.0.1:PORT/ ..."
        assert " on http://" in line, line
        yield proc, line.split(" on ")[1].split()[0].rstrip("/")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


class Rater:
    """A minimal browser: one session cookie, JSON requests."""

    def __init__(self, base: str) -> None:
        self.base, self.cookie = base, ""

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.cookie:
            req.add_header("Cookie", self.cookie)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, headers, payload = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, headers, payload = e.code, e.headers, e.read()
        if headers.get("Set-Cookie"):
            self.cookie = headers["Set-Cookie"].split(";")[0]
        return status, json.loads(payload or b"{}")

    def rate(self, state: dict[str, Any], score: int) -> tuple[int, dict[str, Any]]:
        t = state["trial"]
        return self.call("POST", "/api/rate", {"position": t["position"], "trial": t["trial"], "score": score})


def _study(tmp_path: Path, raters: int) -> Path:
    create_study(make_report(tmp_path), tmp_path / "study", raters=raters, repeats=2, seed=1)
    return tmp_path / "study"


def test_sigkill_mid_round_loses_no_acknowledged_rating(tmp_path: Path) -> None:
    study = _study(tmp_path, raters=1)
    acked: list[tuple[int, str, int]] = []  # (position, trial, score) answered 200
    with running_server(study) as (proc, base):
        rater = Rater(base)
        status, state = rater.call("POST", "/api/join", {"name": "kim"})
        assert status == 200
        stop = threading.Event()

        def rate_until_killed() -> None:
            nonlocal state
            while not stop.is_set() and not state["finished"]:
                trial, score = state["trial"], 1 + len(acked) % 4
                try:
                    status, answer = rater.rate(state, score)
                except OSError:
                    return  # the server died mid-request: this rating was never acknowledged
                if status != 200:
                    return
                acked.append((trial["position"], trial["trial"], score))
                state = answer

        worker = threading.Thread(target=rate_until_killed)
        worker.start()
        deadline = time.monotonic() + 20
        while len(acked) < 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)  # mid-round: requests are in flight
        proc.wait(timeout=10)
        stop.set()
        worker.join(timeout=20)
    assert len(acked) >= 4
    stored = [(r.position, r.trial, r.score) for r in read_ratings(study / "ratings.sqlite")]
    assert stored[: len(acked)] == acked  # every acknowledged rating survived, in order
    assert len(stored) <= len(acked) + 1  # at most the one request the kill interrupted (committed, unanswered)
    from ldsr.study.app import create_app

    again = create_app(study).test_client()  # a restarted server resumes where the database stands
    state = again.post("/api/join", json={"name": "kim"}).get_json()
    assert state["done"] == len(stored) and state["trial"]["position"] == len(stored)


def test_two_raters_concurrently_lose_nothing(tmp_path: Path) -> None:
    study = _study(tmp_path, raters=2)
    results: dict[str, list[int]] = {}
    with running_server(study, "--threads", "4") as (_, base):

        def rater(name: str, score: int) -> None:
            client = Rater(base)
            status, state = client.call("POST", "/api/join", {"name": name})
            codes = [status]
            while status == 200 and not state["finished"]:
                status, state = client.rate(state, score)
                codes.append(status)
            results[name] = codes

        threads = [threading.Thread(target=rater, args=(name, s)) for name, s in (("ann", 2), ("ben", 4))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert {k: set(v) for k, v in results.items()} == {"ann": {200}, "ben": {200}}
    ratings = read_ratings(study / "ratings.sqlite")
    for name, score in (("ann", 2), ("ben", 4)):
        mine = [r for r in ratings if r.label == name]
        assert [r.position for r in mine] == list(range(8)) and {r.score for r in mine} == {score}
