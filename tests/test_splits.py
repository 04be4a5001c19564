"""Split rules as data (ldsr.data.splits, experiments/splits/*.yaml): the project's datasets are split by their rule
files, a folder without rules is used whole, and bad rule files get one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ldsr.data.splits import filter_split, load_split_rules, split_of

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((ROOT / "experiments" / "splits").glob("*.yaml"))
RULES = load_split_rules(RULE_FILES)


def test_every_dataset_has_a_rule_file() -> None:
    assert {p.stem for p in RULE_FILES} == {"figshare", "colin27", "cmu1", "kather2016"}


@pytest.mark.parametrize(
    "path, split",
    [
        ("data/mri/brain-tumor-figshare/0/1747.jpg", "train"),
        ("data/mri/brain-tumor-figshare/0/1748.jpg", "test"),
        ("data/mri/brain-tumor-figshare/1/637.jpg", "train"),
        ("data/mri/brain-tumor-figshare/1/708.jpg", "test"),
        ("data/mri/brain-tumor-figshare/2/2638.jpg", "train"),
        ("data/mri/brain-tumor-figshare/2/2639.jpg", "test"),
        ("data/mri/brain-tumor-figshare/3/9999.jpg", None),  # no such class: no rule applies
        ("fixtures/mri/figshare_2_2750.jpg", "test"),
        ("data/mri/colin27/mricron_data_colin27_ch2_axial_z117.png", "train"),
        ("data/mri/colin27/mricron_data_colin27_ch2_axial_z120.png", "test"),
        ("fixtures/mri/colin27_z141.png", "test"),
        ("histology/cmu1-small-region/tiles150/cmu1sr_y2250_x0900.png", "train"),
        ("histology/cmu1-small-region/tiles150/cmu1sr_y2400_x0900.png", "test"),
        ("histology/kather2016/image_78_label_0.png", "train"),
        ("histology/kather2016/image_80_label_3.png", "test"),
        ("fixtures/histology/kather2016_86_label_5_150.png", "test"),
        ("my/photos/1748.jpg", None),
        ("other/image_90_label_1.png", None),
        ("x/3/2700.jpg", None),
    ],
)
def test_split_of(path: str, split: str | None) -> None:
    assert split_of(path, rules=RULES) == split
    assert split_of(path) is None  # without rules no file belongs to a split: a user's folder is used whole


def test_colin27_volume_is_split_by_slice() -> None:
    # The Colin27 volume holds the same anatomy as its _zNNN PNG slices: its slices follow the same z rule.
    vol = "data/mri/colin27/ch2.nii.gz"
    assert split_of(vol, rules=RULES) is None
    assert (split_of(vol, 119, RULES), split_of(vol, 120, RULES)) == ("train", "test")
    assert split_of("fixtures/nifti/colin27_crop.nii.gz", 3, RULES) is None  # a crop's frame indices are not z


def test_filter_split_keeps_unknown_files() -> None:
    paths = [Path("f/brain-tumor-figshare/0/1.jpg"), Path("f/brain-tumor-figshare/0/1800.jpg"), Path("mine/a.png")]
    assert filter_split(paths, "train", RULES) == [paths[0], paths[2]]
    assert filter_split(paths, "test", RULES) == [paths[1], paths[2]]
    assert filter_split(paths, "all", RULES) == paths
    assert filter_split(paths, "test") == paths  # no rules: the whole folder
    with pytest.raises(ValueError, match="split must be"):
        filter_split(paths, "val")  # type: ignore[arg-type]


def test_fixtures_are_held_out() -> None:
    from ldsr.io import list_images

    known = [p for p in list_images(ROOT / "fixtures") if split_of(p, rules=RULES) is not None]
    assert len(known) >= 8 and all(split_of(p, rules=RULES) == "test" for p in known)


def test_json_rules_and_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "mine.json"
    good.write_text('{"dataset": "mine", "rules": [{"match": "(?:^|/)scan_(?P<index>\\\\d+)$", "test_from": 10}]}')
    rules = load_split_rules([good])
    assert [split_of(f"a/scan_{i}.png", rules=rules) for i in (9, 10)] == ["train", "test"]
    cases = {
        "non-empty .rules. list": "dataset: x\n",
        "needs a named group 'index'": "rules: [{match: 'scan', test_from: 3}]\n",
        "test_from must be": "rules: [{match: '(?P<index>\\d+)', test_from: high}]\n",
        "bad 'match' pattern": "rules: [{match: '(?P<index>', test_from: 3}]\n",
        "per-group test_from needs": "rules: [{match: '(?P<index>\\d+)', test_from: {0: 3}}]\n",
    }
    for reason, text in cases.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")) as e:
            load_split_rules([bad])
        assert str(bad) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="cannot read split rules"):
        load_split_rules([tmp_path / "missing.yaml"])
