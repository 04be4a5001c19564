"""Reader study: design, statistics, results and the web application through Flask's test client."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from ldsr.io import read_image, write_image
from ldsr.study import StudyError, create_study, load_study
from ldsr.study.design import presentation_order
from ldsr.study.stats import consistency, crossed_bootstrap, krippendorff_alpha
from ldsr.study.store import read_ratings

METHODS = ("bicubic", "sharpnet")
NAMES = ("a_slice.png", "b_slice.png", "c_slice.png")


def make_report(root: Path, *, size: int = 24, scale: int = 4) -> Path:
    """An `ldsr evaluate` report folder written directly: gt/ (one pixel row and column beyond a multiple of
    the scale, as a real GT may be), report/results.csv, summary.json and sr/<method>/<name>."""
    rng = np.random.default_rng(0)
    gt_dir, report = root / "gt", root / "report"
    lines = ["# gt_dir: somewhere", "# scale: 4"]
    header = "method,image,height,width,channels,data_range,psnr_y,ssim_y,psnr_rgb,ssim_rgb,lr_psnr,sr_path"
    lines.append(header)
    for i, name in enumerate(NAMES):
        gt = rng.random((size + 1, size + 1, 3)).astype(np.float32)
        write_image(gt_dir / name, gt, bit_depth=8)
        for j, method in enumerate(METHODS):
            sr = np.clip(gt[:size, :size] + 0.05 * (j + 1) * rng.standard_normal((size, size, 3)), 0, 1)
            write_image(report / "sr" / method / name, sr, bit_depth=8)
            psnr, ssim = 20.0 + 5 * j + i, 0.5 + 0.1 * j
            lines.append(f"{method},{name},{size},{size},3,255.0,{psnr},{ssim},{psnr},{ssim},30.0,sr/{method}/{name}")
    (report / "results.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = {"provenance": {"gt_dir": str(gt_dir.resolve()), "scale": scale}, "methods": []}
    (report / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return report


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    report = make_report(tmp_path)
    create_study(report, tmp_path / "study", seed=3, raters=4, repeats=2)
    return tmp_path / "study"


# ----------------------------------------------------------------------------------------------------------
# statistics


def test_krippendorff_alpha_matches_the_textbook_example() -> None:
    """Krippendorff (2011), 'Computing Krippendorff's Alpha-Reliability': 4 coders, 12 units, values 1-5 with
    missing data; alpha = 0.743 nominal, 0.815 ordinal, 0.849 interval."""
    n = np.nan
    data = np.array([
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ])  # fmt: skip
    assert krippendorff_alpha(data, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(data, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(data, "interval") == pytest.approx(0.849, abs=5e-4)


def test_krippendorff_alpha_perfect_systematic_and_undefined() -> None:
    perfect = np.array([[1, 2, 3, 4, 2], [1, 2, 3, 4, 2]], dtype=float)
    assert krippendorff_alpha(perfect) == pytest.approx(1.0)
    # one coder always one point higher: ordinal alpha well below 1 but above chance
    shifted = np.array([[1, 2, 3, 1, 2, 3], [2, 3, 4, 2, 3, 4]], dtype=float)
    assert 0 < krippendorff_alpha(shifted) < 0.8
    assert np.isnan(krippendorff_alpha(np.array([[3, 3], [3, 3]], dtype=float)))  # no variation
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(perfect, "ratio")  # type: ignore[arg-type]  # the error for a bad level is the test


def test_crossed_bootstrap_estimate_and_interval() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(1, 5, size=(6, 10)).astype(float)
    scores[0, 0] = np.nan
    up, low, high = crossed_bootstrap(scores, "up", n_boot=500, seed=0)
    valid = scores[np.isfinite(scores)]
    assert up == pytest.approx(np.mean(valid >= 3))
    assert low < up < high
    mean, mlow, mhigh = crossed_bootstrap(scores, "mean", n_boot=500, seed=0)
    assert mean == pytest.approx(valid.mean()) and mlow < mean < mhigh
    # identical raters and images: no spread at all
    assert crossed_bootstrap(np.full((3, 4), 4.0), "up", n_boot=100) == (1.0, 1.0, 1.0)
    one = crossed_bootstrap(np.array([[4.0, 1.0]]), "mean")
    assert one[0] == 2.5 and np.isnan(one[1])


def test_consistency_of_repeats() -> None:
    c = consistency([4, 3, 1, 2], [4, 2, 3, 2])
    assert c == {"pairs": 4, "exact": 0.5, "within_one": 0.75, "mean_abs_diff": 0.75}
    assert consistency([], [])["pairs"] == 0


def test_presentation_order_repeats_and_gap() -> None:
    ids = [f"t{i}" for i in range(12)]
    a = presentation_order(ids, 3, np.random.default_rng(0))
    b = presentation_order(ids, 3, np.random.default_rng(0))
    c = presentation_order(ids, 3, np.random.default_rng(1))
    assert a == b and a != c  # seeded, and different per rater
    assert sorted(set(a)) == sorted(ids) and len(a) == 15
    for tid in {t for t in a if a.count(t) == 2}:
        first, second = (i for i, t in enumerate(a) if t == tid)
        assert second - first > 5  # never shown again right away
    assert sum(a.count(t) == 2 for t in ids) == 3
    with pytest.raises(ValueError, match="repeats"):
        presentation_order(ids, 8, np.random.default_rng(0))  # 12 - gap 5 = 7 at most


# ----------------------------------------------------------------------------------------------------------
# study create


def test_create_copies_images_under_opaque_ids(tmp_path: Path, study_dir: Path) -> None:
    study = load_study(study_dir)
    assert study.methods == METHODS and len(study.trials) == 6 and study.n_raters == 4
    assert all(len(o) == 8 for o in study.orders) and len({tuple(o) for o in study.orders}) > 1
    files = sorted(p.name for p in (study_dir / "images").iterdir())
    assert len(files) == 3 + 6
    for name in files:  # opaque names: no method, no image name
        assert all(m not in name for m in METHODS) and all(Path(n).stem not in name for n in NAMES)
    for trial in study.trials.values():
        name = study.images[trial.image]["name"]
        ref, _ = read_image(study_dir / "images" / f"{study.images[trial.image]['reference']}.png")
        gt, _ = read_image(tmp_path / "gt" / name)
        np.testing.assert_array_equal(ref, gt[:24, :24])  # cropped to the SR size (a multiple of the scale)
        cand, _ = read_image(study_dir / "images" / f"{trial.candidate}.png")
        sr, _ = read_image(tmp_path / "report" / "sr" / trial.method / name)
        np.testing.assert_array_equal(cand, sr)
        assert trial.metrics["psnr_y"] > 0


def test_create_picks_images_and_methods(tmp_path: Path) -> None:
    report = make_report(tmp_path)
    study = create_study(report, tmp_path / "s1", n_images=2, methods=["sharpnet"], seed=0, raters=2, repeats=0)
    assert study.methods == ("sharpnet",) and len(study.images) == 2 and all(len(o) == 2 for o in study.orders)
    with pytest.raises(StudyError, match=r"results.csv: no method 'srgan'"):
        create_study(report, tmp_path / "s2", methods=["srgan"])
    with pytest.raises(StudyError, match="already holds a study"):
        create_study(report, tmp_path / "s1")
    with pytest.raises(StudyError, match="not found"):
        create_study(tmp_path / "nothing", tmp_path / "s3")
    with pytest.raises(ValueError, match="--repeats"):
        create_study(report, tmp_path / "s4", repeats=4)  # 6 trials, gap 3: at most 3
    assert not (tmp_path / "s2").exists() and not (tmp_path / "s4").exists()  # nothing half-made


def test_study_from_a_real_evaluate_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layout `ldsr evaluate` really writes (bicubic on two 48x48 crops of fixture images)."""
    from ldsr.evaluation import report as report_module

    monkeypatch.setattr(report_module, "_figures", lambda *a, **k: None)  # its figures take seconds: not needed
    gt = tmp_path / "gt"
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "mri"
    for name in ("figshare_0_1840.jpg", "figshare_1_0708.jpg"):
        img, _ = read_image(fixtures / name)
        write_image(gt / name.replace(".jpg", ".png"), img[200:250, 200:250], bit_depth=8)  # 50: not a multiple of 4
    cfg = report_module.EvalConfig(gt_dir=gt, models=("bicubic",), out_dir=tmp_path / "report", preset="bicubic",
                                   heatmaps=0)  # fmt: skip
    report_module.evaluate(cfg)
    study = create_study(tmp_path / "report", tmp_path / "study", raters=1, repeats=0)
    assert study.methods == ("bicubic",) and len(study.images) == 2
    for trial in study.trials.values():
        ref, _ = read_image(study.root / "images" / f"{study.images[trial.image]['reference']}.png")
        cand, _ = read_image(study.root / "images" / f"{trial.candidate}.png")
        assert ref.shape == cand.shape == (48, 48, 1)


# ----------------------------------------------------------------------------------------------------------
# the web application


def _client(study_dir: Path, **kwargs: object):  # noqa: ANN202 - flask's FlaskClient
    from ldsr.study.app import create_app

    return create_app(study_dir, **kwargs).test_client()  # type: ignore[arg-type]


def _rate(client, state: dict, score: int):  # noqa: ANN001, ANN202
    t = state["trial"]
    return client.post("/api/rate", json={"position": t["position"], "trial": t["trial"], "score": score, "ms": 900})


def test_join_rate_resume_and_finish(study_dir: Path) -> None:
    client = _client(study_dir)
    page = client.get("/")
    assert page.status_code == 200 and b"study.js" in page.data
    assert client.get("/api/state").status_code == 401
    r = client.post("/api/join", json={"name": "Dr. Ada"})
    assert r.status_code == 200
    state = r.get_json()
    assert state["done"] == 0 and state["total"] == 8 and state["rater"] == "Dr. Ada"
    assert client.get(state["trial"]["reference"]).data[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(state["trial"]["candidate"]).status_code == 200
    for score in (4, 3, 2):
        r = _rate(client, state, score)
        assert r.status_code == 200 and r.get_json()["saved"]
        state = r.get_json()
    assert state["done"] == 3
    # resume: a fresh browser joining with the same name continues at position 3
    other = _client(study_dir)
    resumed = other.post("/api/join", json={"name": "Dr. Ada"}).get_json()
    assert resumed["done"] == 3 and resumed["trial"] == state["trial"]
    assert client.get("/api/state").status_code == 401  # the old session was replaced
    state = resumed
    while not state["finished"]:
        state = _rate(other, state, 1).get_json()
    assert state["done"] == 8 and state["trial"] is None
    ratings = read_ratings(study_dir / "ratings.sqlite")
    assert [r.score for r in ratings] == [4, 3, 2] + [1] * 5 and [r.position for r in ratings] == list(range(8))
    # nothing served to the page names a method or an image
    served = b"".join([page.data, client.get("/static/study.js").data, json.dumps(resumed).encode()])
    for secret in (*METHODS, *(Path(n).stem for n in NAMES)):
        assert secret.encode() not in served


def test_bad_requests_get_4xx_and_change_nothing(tmp_path: Path, study_dir: Path) -> None:
    report = make_report(tmp_path / "other")
    other = create_study(report, tmp_path / "other_study", seed=9, raters=1)
    client = _client(study_dir)
    state = client.post("/api/join", json={"name": "Bo"}).get_json()
    assert _rate(client, state, 2).status_code == 200
    state = client.get("/api/state").get_json()
    t = state["trial"]
    before = read_ratings(study_dir / "ratings.sqlite")
    good = {"position": t["position"], "trial": t["trial"], "score": 3}
    bad = [
        {**good, "score": 0}, {**good, "score": 5}, {**good, "score": "3"}, {**good, "score": True},
        {**good, "score": 2.5}, {**good, "trial": next(iter(other.trials))},  # another study's trial
        {**good, "position": 0, "score": 4},  # already rated differently
        {**good, "position": 5}, {**good, "position": -1}, {**good, "position": 99}, {**good, "ms": -3},
        {**good, "extra": 1}, {"score": 3}, [1, 2],
    ]  # fmt: skip
    for body in bad:
        r = client.post("/api/rate", json=body)
        assert 400 <= r.status_code < 500 and "error" in r.get_json(), body
    assert client.post("/api/rate", data="score=3", content_type="application/x-www-form-urlencoded").status_code == 400
    assert client.post("/api/rate", data=b"x" * 10000, content_type="application/json").status_code == 413
    stranger = _client(study_dir)
    assert stranger.post("/api/rate", json=good).status_code == 401  # unknown rater
    stranger.set_cookie("ldsr_study", "forged-token")
    assert stranger.post("/api/rate", json=good).status_code == 401
    mine = load_study(study_dir).images[0]["reference"]
    for path in ("/img/../../x", "/img/..%2F..%2Fstudy.json", "/img/%2e%2e/study.json", "/static/../study.json",
                 "/static/index.html", "/study.json", f"/images/{mine}.png", f"/img/{mine}.png", f"/img/{mine}/..",
                 "/img/" + other.images[0]["reference"], "/img/ZZZZ", "/../../etc/passwd"):  # fmt: skip
        r = client.get(path)
        assert r.status_code == 404, path
    for body in ({}, {"name": ""}, {"name": "x" * 65}, {"name": "a\nb"}, {"name": 3}, {"name": "a", "code": "b"},
                 {"code": "nope"}, {"role": "admin"}):  # fmt: skip
        assert 400 <= client.post("/api/join", json=body).status_code < 500, body
    assert client.get("/api/rate").status_code == 405
    after = read_ratings(study_dir / "ratings.sqlite")
    assert after == before and len(after) == 1
    # a retried request with the same rating is harmless: nothing changes
    r = client.post("/api/rate", json={"position": 0, "trial": before[0].trial, "score": 2})
    assert r.status_code == 200 and r.get_json()["duplicate"] and read_ratings(study_dir / "ratings.sqlite") == before


def test_invitation_codes_host_check_and_full_study(tmp_path: Path) -> None:
    report = make_report(tmp_path)
    study = create_study(report, tmp_path / "study", raters=2, repeats=0)
    client = _client(study.root, require_code=True, allowed_hosts=frozenset({"localhost"}))
    assert client.get("/api/config").get_json()["require_code"] is True
    assert client.post("/api/join", json={"name": "Eve"}).status_code == 403
    assert client.post("/api/join", json={"code": "guess"}).status_code == 403
    first = client.post("/api/join", json={"code": study.codes[0]})
    assert first.status_code == 200 and first.get_json()["rater"] == "rater 1"
    assert client.get("/api/state", headers={"Host": "evil.example:8000"}).status_code == 421
    assert client.post("/api/join", json={"code": study.codes[1]}).status_code == 200
    open_client = _client(study.root)
    assert open_client.post("/api/join", json={"name": "Third"}).status_code == 409  # two places, both taken
    assert open_client.post("/api/join", json={"code": study.codes[0]}).get_json()["rater"] == "rater 1"


def test_loopback_detection() -> None:
    from ldsr.study.serve import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.4", "::", "example.org", ""))


def test_raters_in_threads_lose_nothing(study_dir: Path) -> None:
    errors: list[str] = []

    def rater(name: str, score: int) -> None:
        client = _client(study_dir)
        state = client.post("/api/join", json={"name": name}).get_json()
        while not state["finished"]:
            r = _rate(client, state, score)
            if r.status_code != 200:
                errors.append(f"{name}: {r.status_code} {r.get_json()}")
                return
            state = r.get_json()

    threads = [threading.Thread(target=rater, args=(f"r{i}", i + 1)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ratings = read_ratings(study_dir / "ratings.sqlite")
    assert len(ratings) == 4 * 8
    for i in range(4):
        mine = [r for r in ratings if r.label == f"r{i}"]
        assert [r.position for r in mine] == list(range(8)) and {r.score for r in mine} == {i + 1}


# ----------------------------------------------------------------------------------------------------------
# results


def test_results_table_and_files(study_dir: Path) -> None:
    from ldsr.study.results import study_results

    study = load_study(study_dir)
    scores = {"bicubic": (1, 2), "sharpnet": (4, 3)}  # two raters who never agree on the exact score
    for k, name in enumerate(("A", "B")):
        client = _client(study_dir)
        state = client.post("/api/join", json={"name": name}).get_json()
        while not state["finished"]:
            trial = study.trials[state["trial"]["trial"]]
            state = _rate(client, state, scores[trial.method][k]).get_json()
    _, res, paths = study_results(study_dir, n_boot=200)
    by = {m.method: m for m in res.methods}
    assert by["bicubic"].up[0] == 0.0 and by["sharpnet"].up[0] == 1.0
    assert by["bicubic"].mean[0] == pytest.approx(1.5) and by["sharpnet"].mean[0] == pytest.approx(3.5)
    assert by["sharpnet"].counts == {1: 0, 2: 0, 3: 3, 4: 3} and by["bicubic"].n_raters == 2
    assert by["sharpnet"].metrics["psnr_y"] == pytest.approx(26.0)  # mean of 25, 26, 27 from results.csv
    assert 0 < res.alpha_ordinal < 1
    assert res.overall_consistency["pairs"] == 4 and res.overall_consistency["exact"] == 1.0
    assert [p.name for p in paths] == ["results.md", "results.csv", "raters.csv", "ratings.csv", "results.png"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    md = paths[0].read_text()
    assert "| sharpnet | 6 | 2 | 3 | 100 %" in md and "PSNR-Y" in md and "Krippendorff" in md
    rows = list(csv.DictReader(paths[1].open()))
    assert [r["method"] for r in rows] == ["bicubic", "sharpnet"] and float(rows[1]["up"]) == 1.0
    assert len(list(csv.DictReader(paths[3].open()))) == 16


def test_cli_create_and_results(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ldsr.cli import app

    report = make_report(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["study", "create", str(report), "--out", str(tmp_path / "s"), "--images", "2",
                            "--raters", "3", "--seed", "5", "--methods", "sharpnet,bicubic"])  # fmt: skip
    assert r.exit_code == 0, r.output
    study = load_study(tmp_path / "s")
    assert len(study.images) == 2 and all(code in r.output for code in study.codes)
    assert study.methods == ("sharpnet", "bicubic")
    r = runner.invoke(app, ["study", "results", str(tmp_path / "s"), "--boot", "50"])
    assert r.exit_code == 0 and "| bicubic | 0 |" in r.output and (tmp_path / "s" / "results" / "results.png").is_file()
    r = runner.invoke(app, ["study", "create", str(tmp_path / "missing"), "--out", str(tmp_path / "t")])
    assert r.exit_code == 2 and "results.csv: not found" in r.output
