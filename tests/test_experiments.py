"""experiments/: every moved experiment config still loads (inheritance, relative paths), names the split rules of
its data, and its data paths resolve to ../shared/data from the repository's layout; scripts moved with them."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ldsr.config import load_config

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


def test_every_experiment_config_loads_and_names_its_split_rules() -> None:
    files = sorted((EXPERIMENTS / "configs").glob("[cg]pu/*.yaml"))  # cpu/ and gpu/ (the shipped models' runs)
    assert len(files) >= 60
    for f in files:
        if f.name.startswith("_"):  # fragments, only inherited
            assert isinstance(yaml.safe_load(f.read_text()), dict)
            continue
        cfg = load_config(f)
        assert getattr(cfg, cfg.task) is not None, f
        assert any("shared/data" in p for p in cfg.data.train), f"{f}: trains on ../shared/data"
        named = {Path(r).name for r in cfg.data.split_rules}
        assert named and all((EXPERIMENTS / "splits" / n).is_file() for n in named), (f, named)
        assert all(Path(r).is_file() for r in cfg.data.split_rules), f  # resolved against the config's folder
        for key in ("autoencoder", "init_from"):  # earlier runs: runs/<...> of the repository
            p = getattr(cfg.sr, key, None) if cfg.task == "sr" else None
            assert p is None or "runs/" in p and Path(p).is_absolute() == Path(p).exists(), (f, key, p)


def test_data_paths_point_at_the_shared_data_beside_the_repository() -> None:
    """Relative data paths are relative to the config's folder (else the cwd): both land on ../shared/data."""
    shared = (ROOT.parent / "shared" / "data").as_posix()
    for f in sorted((EXPERIMENTS / "configs").glob("[cg]pu/*.yaml")):
        data = (yaml.safe_load(f.read_text()) or {}).get("data") or {}
        for p in [*(data.get("train") or []), *(data.get("val") or [])]:
            from_folder = os.path.normpath(f.parent / p)
            from_root = os.path.normpath(ROOT / p)
            assert Path(from_folder).as_posix().startswith(shared) or Path(from_root).as_posix().startswith(shared), (
                f, p)  # fmt: skip
        raw = yaml.safe_load(f.read_text()) or {}
        for key in ("autoencoder", "init_from"):  # earlier runs of this repository: <root>/runs/...
            p = (raw.get("sr") or raw.get("baseline") or {}).get(key)
            if isinstance(p, str) and p.startswith("../"):
                assert Path(os.path.normpath(f.parent / p)).is_relative_to(ROOT / "runs"), (f, key, p)


def test_experiment_paths_in_scripts_exist() -> None:
    """Every experiments/configs/... or experiments/scripts/... path named by a script exists."""
    import re

    for script in sorted((EXPERIMENTS / "scripts").glob("*.sh")):
        for ref in re.findall(r"experiments/(?:configs|scripts)/[\w./-]+\.(?:yaml|py|sh)", script.read_text()):
            assert (ROOT / ref).is_file(), f"{script.name}: {ref} missing"
