"""The rating web application of `ldsr study serve` (Flask; served by waitress in `ldsr.study.serve`).

Routes (nothing from a request is ever joined into a file path: images are looked up by opaque id in the
study's own table, static files in a fixed table):

- `GET /`: the rating page; `GET /static/<study.js|study.css>`.
- `GET /api/config`: the scale labels and whether an invitation code is required (no method names).
- `POST /api/join` `{"name": ...}` or `{"code": ...}`: joins or resumes; sets the session cookie.
- `GET /api/state`: the rater's progress and the next trial (or `{"finished": true}`).
- `POST /api/rate` `{"position": int, "trial": id, "score": 1..4, "ms": int?}`: committed before the answer.
- `GET /img/<16 hex>`: one of the study's images.

Bad requests get a 4xx JSON answer `{"error": ...}` and change nothing.
"""

from __future__ import annotations

import hmac
import secrets
from importlib import resources
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request, send_file

from ldsr.study.design import DB_FILE, SCALE_LABELS, Study, load_study
from ldsr.study.store import Full, Rater, RatingStore

COOKIE = "ldsr_study"
MAX_NAME = 64
STATIC = {"study.js": "text/javascript", "study.css": "text/css"}
CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'"


def _static_bytes(name: str) -> bytes:
    return resources.files("ldsr.study").joinpath("static", name).read_bytes()


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def _valid_name(value: Any) -> str | None:
    """A display name: 1..64 printable characters after stripping, or None."""
    if not isinstance(value, str):
        return None
    name = value.strip()
    return name if 0 < len(name) <= MAX_NAME and name.isprintable() else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class StudyApp:
    """The study, its ratings store and the request handlers (bound into a Flask app by `create_app`)."""

    def __init__(self, study: Study, *, require_code: bool) -> None:
        self.study = study
        self.require_code = require_code
        self.store = RatingStore(study.root / DB_FILE, study.study_id, study.n_raters)
        self.pages = {name: _static_bytes(name) for name in ("index.html", *STATIC)}

    def rater(self) -> Rater | None:
        token = request.cookies.get(COOKIE)
        return self.store.rater_for(token) if token and len(token) <= 128 else None

    def trial_doc(self, rater: Rater, position: int) -> dict[str, Any] | None:
        order = self.study.orders[rater.slot]
        if position >= len(order):
            return None
        trial = self.study.trials[order[position]]
        reference = self.study.images[trial.image]["reference"]
        return {"position": position, "trial": trial.id, "reference": f"/img/{reference}",
                "candidate": f"/img/{trial.candidate}"}  # fmt: skip

    def state(self, rater: Rater) -> dict[str, Any]:
        done = self.store.done(rater.id)
        total = len(self.study.orders[rater.slot])
        return {"rater": rater.label, "done": done, "total": total, "finished": done >= total,
                "trial": self.trial_doc(rater, done)}  # fmt: skip

    # handlers -----------------------------------------------------------------------------------------------

    def join(self) -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or set(body) - {"name", "code"} or len(body) != 1:
            return _error(400, 'send JSON {"name": ...} or {"code": ...}')
        token = secrets.token_urlsafe(24)
        if "code" in body:
            code = body["code"].strip() if isinstance(body["code"], str) else ""
            match = next((c for c in self.study.codes if hmac.compare_digest(c.encode(), code.encode())), None)
            if match is None:
                return _error(403, "unknown invitation code")
            kwargs: dict[str, str] = {"code": match}
        else:
            if self.require_code:
                return _error(403, "this server needs an invitation code")
            name = _valid_name(body["name"])
            if name is None:
                return _error(400, f"a name is 1 to {MAX_NAME} printable characters")
            kwargs = {"name": name}
        try:
            rater, _ = self.store.join(token, **kwargs)
        except Full:
            return _error(409, f"every one of the study's {self.study.n_raters} rater places is taken")
        response = jsonify(self.state(rater))
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", max_age=90 * 24 * 3600)
        return response

    def get_state(self) -> Any:
        rater = self.rater()
        if rater is None:
            return _error(401, "not joined (or the session was replaced by a later join)")
        return jsonify(self.state(rater))

    def rate(self) -> Any:
        rater = self.rater()
        if rater is None:
            return _error(401, "not joined (or the session was replaced by a later join)")
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not {"position", "trial", "score"} <= set(body) <= {
            "position", "trial", "score", "ms"}:  # fmt: skip
            return _error(400, 'send JSON {"position": int, "trial": id, "score": 1..4, "ms": int}')
        position, score, ms = _int(body["position"]), _int(body["score"]), _int(body.get("ms"))
        if score is None or not 1 <= score <= 4:
            return _error(400, "score must be an integer 1, 2, 3 or 4")
        order = self.study.orders[rater.slot]
        if position is None or not 0 <= position < len(order):
            return _error(400, f"position must be an integer in [0, {len(order)})")
        if body["trial"] != order[position]:
            return _error(400, f"trial {str(body['trial'])[:40]!r} is not position {position} of your order")
        if body.get("ms") is not None and (ms is None or not 0 <= ms < 2**31):
            return _error(400, "ms must be a non-negative integer")
        outcome = self.store.rate(rater.id, position, order[position], score, ms)
        if outcome.startswith("conflict"):
            return _error(409, outcome.removeprefix("conflict: "))
        return jsonify(saved=True, duplicate=outcome == "duplicate", **self.state(rater))

    def image(self, image_id: str) -> Any:
        path = self.study.image_file(image_id)  # None unless one of the study's own ids
        if path is None:
            return _error(404, "no such image")
        response = send_file(path, mimetype="image/png", max_age=3600)
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response


def create_app(study_dir: Path | Study, *, require_code: bool = False,
               allowed_hosts: frozenset[str] | None = None) -> Flask:  # fmt: skip
    """The Flask application of a study folder (or a loaded Study).

    `allowed_hosts`: host names (without port) the Host header may carry; None accepts any. A loopback server
    passes its loopback names, so that a web page elsewhere cannot reach it through DNS rebinding.
    """
    study = study_dir if isinstance(study_dir, Study) else load_study(Path(study_dir))
    handlers = StudyApp(study, require_code=require_code)
    app = Flask("ldsr.study", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 4096
    app.extensions["ldsr_study"] = handlers

    @app.before_request
    def check_host() -> Any:
        host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
        if allowed_hosts is not None and host.strip("[]").lower() not in allowed_hosts:
            return _error(421, f"unexpected Host {request.host[:80]!r}")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = CSP
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def index() -> Response:
        return Response(handlers.pages["index.html"], mimetype="text/html")

    @app.get("/static/<name>")
    def static_file(name: str) -> Any:
        if name not in STATIC:
            return _error(404, "no such file")
        return Response(handlers.pages[name], mimetype=STATIC[name])

    @app.get("/api/config")
    def config() -> Any:
        return jsonify(require_code=handlers.require_code, labels={str(k): v for k, v in SCALE_LABELS.items()})

    app.post("/api/join")(handlers.join)
    app.get("/api/state")(handlers.get_state)
    app.post("/api/rate")(handlers.rate)
    app.get("/img/<image_id>")(handlers.image)

    @app.errorhandler(404)
    def not_found(_: Exception) -> Any:
        return _error(404, "not found")

    @app.errorhandler(405)
    def not_allowed(_: Exception) -> Any:
        return _error(405, "method not allowed")

    @app.errorhandler(413)
    def too_large(_: Exception) -> Any:
        return _error(413, "request too large")

    return app
