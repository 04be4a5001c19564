"""ldsr.config (YAML -> typed dataclasses) and the `ldsr train` CLI's --dry-run."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from ldsr.config import RunConfig, apply_overrides, from_dict, load_config, parse_override, to_dict, to_yaml
from ldsr.data.config import DataConfig
from ldsr.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


@dataclass
class Inner:
    size: int = 3
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: str = "x"
    rate: float = 0.5
    flag: bool = False
    opt: Optional[int] = None
    items: list[str] = field(default_factory=list)
    pair: tuple[float, float] = (1.0, 2.0)
    inner: Inner = field(default_factory=Inner)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Kinds:
    """One field per annotation kind `ldsr.config._convert` dispatches on."""

    either: int | str = 0
    maybe: float | None = None
    many: tuple[int, ...] = ()
    table: dict[str, int] = field(default_factory=dict)
    color: Color = Color.RED
    where: Path = Path(".")


def test_every_annotation_kind_converts_and_names_the_key() -> None:
    k = from_dict(Kinds, {"either": "s", "maybe": 2, "many": [1, 2.0, 3], "table": {"a": 1}, "color": "blue",
                          "where": "x/y"})  # fmt: skip
    assert (k.either, k.maybe, k.many, k.table, k.color, k.where) == ("s", 2.0, (1, 2, 3), {"a": 1}, Color.BLUE,
                                                                      Path("x/y"))  # fmt: skip
    assert isinstance(k.maybe, float) and from_dict(Kinds, {"either": 5}).either == 5
    for d, msg in [
        ({"either": [1]}, "'either': [1] matches no type of int | str"),
        ({"maybe": "fast"}, "'maybe': expected a number"),
        ({"many": [1, "x"]}, "'many[1]': expected an integer"),
        ({"table": {"a": "b"}}, "'table.a': expected an integer"),
        ({"color": "green"}, "'color': expected one of ['red', 'blue']"),
        ({"where": 3}, "'where': expected a path"),
        ({"many": None}, "'many': must not be null"),
    ]:
        with pytest.raises(ValueError) as e:
            from_dict(Kinds, d)
        assert msg in str(e.value), (d, str(e.value))


def write(tmp: Path, name: str, data: dict | str) -> Path:
    p = tmp / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return p


# ---------------------------------------------------------------------------------------------- from_dict


def test_from_dict_nested_types_and_defaults() -> None:
    o = from_dict(Outer, {"rate": 1, "opt": 4, "items": ["a"], "pair": [3, 4], "inner": {"mode": "b"}})
    assert o == Outer(rate=1.0, opt=4, items=["a"], pair=(3.0, 4.0), inner=Inner(size=3, mode="b"))
    assert isinstance(o.rate, float) and isinstance(o.pair, tuple)
    # YAML 1.1 reads 1e-4 (no dot) as a string: floats accept it
    assert from_dict(Outer, {"rate": "1e-4"}).rate == pytest.approx(1e-4)
    assert to_dict(o)["pair"] == [3.0, 4.0] and from_dict(Outer, to_dict(o)) == o


def test_unknown_key_names_path_and_allowed_keys() -> None:
    with pytest.raises(ValueError) as e:
        from_dict(Outer, {"inner": {"sise": 3}})
    msg = str(e.value)
    assert "'inner.sise'" in msg and "mode, size" in msg
    with pytest.raises(ValueError, match="unknown config key 'bogus'"):
        from_dict(Outer, {"bogus": 1})


@pytest.mark.parametrize(
    "d, where",
    [
        ({"name": 3}, "'name': expected a string"),
        ({"rate": "fast"}, "'rate': expected a number"),
        ({"flag": "yes"}, "'flag': expected true or false"),
        ({"opt": 1.5}, "'opt'"),
        ({"items": "a"}, "'items': expected a list"),
        ({"pair": [1, 2, 3]}, "'pair': expected 2 values"),
        ({"inner": {"mode": "c"}}, "'inner.mode': expected one of ['a', 'b']"),
        ({"inner": {"size": True}}, "'inner.size': expected an integer"),
        ({"inner": 5}, "'inner': expected a mapping"),
    ],
)
def test_type_errors(d: dict, where: str) -> None:
    with pytest.raises(ValueError) as e:
        from_dict(Outer, d)
    assert where in str(e.value)


def test_literal_int_rejects_bool() -> None:
    with pytest.raises(ValueError, match="'channels'"):
        from_dict(RunConfig, {"task": "baseline", "channels": True})


# ------------------------------------------------------------------------------------------- load_config


def test_load_overrides_and_inherit(tmp_path: Path) -> None:
    write(
        tmp_path,
        "base.yaml",
        {"task": "baseline", "channels": 1, "train": {"lr": 0.1, "steps": 7}, "baseline": {"arch": "srcnn"}},
    )
    child = write(tmp_path, "child.yaml", "inherit: base.yaml\ntrain:\n  steps: 9\n")
    cfg = load_config(child, ["train.lr=1e-4", "data.hr_size=64", "baseline.arch=fsrcnn", "train.betas=[0.5, 0.9]"])
    assert isinstance(cfg.train, TrainConfig) and isinstance(cfg.data, DataConfig)
    assert cfg.train.steps == 9 and cfg.train.lr == pytest.approx(1e-4) and cfg.data.hr_size == 64
    assert cfg.train.betas == (0.5, 0.9)
    assert type(cfg.baseline).__name__ == "BaselineConfig" and cfg.baseline.arch == "fsrcnn"
    # to_dict -> YAML -> from_dict round trip gives the same config
    again = RunConfig(**{**vars(cfg)})
    assert load_config(write(tmp_path, "dump.yaml", to_yaml(cfg))) == again


def test_yaml_12_booleans(tmp_path: Path) -> None:
    """`no` stays a string (accelerate's full precision), in files and overrides; only true/false are booleans."""
    base = write(
        tmp_path, "b.yaml", "task: baseline\nbaseline: {arch: srcnn}\ntrain: {precision: no}\ndata: {flips: false}\n"
    )
    cfg = load_config(base)
    assert cfg.train.precision == "no" and cfg.data.flips is False
    assert load_config(base, ["train.precision=no", "data.flips=true"]).data.flips is True
    with pytest.raises(ValueError, match="expected true or false"):
        load_config(base, ["data.flips=yes"])


def test_override_errors(tmp_path: Path) -> None:
    p = write(tmp_path, "c.yaml", {"task": "baseline"})
    with pytest.raises(ValueError, match="unknown config key 'train.lrr'"):
        load_config(p, ["train.lrr=1"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_override("train.lr")
    with pytest.raises(ValueError, match="is not a section"):
        apply_overrides({"train": {"lr": 1}}, ["train.lr.x=2"])
    assert parse_override("data.train=[a, b]") == (["data", "train"], ["a", "b"])


def test_unknown_key_in_model_section_and_missing_task(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'baseline.archh'"):
        load_config(write(tmp_path, "a.yaml", {"task": "baseline", "baseline": {"archh": "srcnn"}}))
    with pytest.raises(ValueError, match="missing 'task'"):
        load_config(write(tmp_path, "b.yaml", {"channels": 1}))
    with pytest.raises(ValueError, match="'scale'"):
        load_config(write(tmp_path, "c.yaml", {"task": "baseline", "scale": 5}))
    with pytest.raises(ValueError, match="cycle"):
        load_config(write(tmp_path, "d.yaml", "inherit: d.yaml\ntask: sr\n"))


def test_relative_paths_resolve_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    p = write(tmp_path, "c.yaml", {"task": "baseline", "data": {"train": ["imgs", "/abs/x", "nowhere"]}})
    cfg = load_config(p)
    assert cfg.data.train == [str((tmp_path / "imgs").resolve()), "/abs/x", "nowhere"]


def test_every_shipped_config_loads() -> None:
    files = sorted(CONFIGS.rglob("*.yaml"))
    assert len(files) >= 17
    for f in files:
        if f.name.startswith("_"):  # fragments, only inherited
            assert isinstance(yaml.safe_load(f.read_text()), dict)
            continue
        cfg = load_config(f)
        section = getattr(cfg, cfg.task)
        assert section is not None and not isinstance(section, dict), f
        assert cfg.data.hr_size % cfg.scale == 0, f
    rgb = load_config(CONFIGS / "ldm_sr_x4_rgb.yaml")
    assert rgb.channels == 3 and rgb.sr.space == "latent" and rgb.sr.autoencoder.endswith("vqvae_f4_rgb")
    assert load_config(CONFIGS / "sr3_x4.yaml").sr.space == "pixel"
    for arch in ("srcnn", "fsrcnn", "esrgan"):  # every baseline in 1 and 3 channels
        grey, colour = load_config(CONFIGS / f"{arch}_x4.yaml"), load_config(CONFIGS / f"{arch}_x4_rgb.yaml")
        assert grey.baseline.arch == colour.baseline.arch == arch
        assert (grey.channels, colour.channels) == (1, 3)
        assert colour.data.train[0].endswith("tiles150") and colour.train.run_dir.endswith(f"{arch}_x4_rgb")


# splits: tests/test_splits.py (the rules are data in experiments/splits/)


# ------------------------------------------------------------------------------------------------- CLI


def _app():
    import typer

    from ldsr.cli.train import register

    app = typer.Typer()

    @app.command("noop")
    def noop() -> None:  # a second command keeps `train` a named sub-command
        pass

    register(app)
    return app


def test_cli_dry_run_prints_resolved_yaml() -> None:
    from typer.testing import CliRunner

    res = CliRunner().invoke(
        _app(),
        [
            "train",
            "baseline",
            "-c",
            str(CONFIGS / "tiny" / "srcnn.yaml"),
            "--dry-run",
            "train.lr=2e-4",
            "data.hr_size=48",
        ],
    )
    assert res.exit_code == 0, res.output
    d = yaml.safe_load(res.output)
    assert d["task"] == "baseline" and d["train"]["lr"] == pytest.approx(2e-4) and d["data"]["hr_size"] == 48
    assert d["baseline"]["arch"] == "srcnn" and d["data"]["train"] == [str(ROOT / "fixtures" / "mri")]


def test_cli_task_mismatch_and_bad_key() -> None:
    from typer.testing import CliRunner

    from ldsr.cli.train import run_command

    with pytest.raises(ValueError, match="ldsr train baseline"):
        run_command("sr", CONFIGS / "tiny" / "srcnn.yaml", [], dry_run=True)
    runner = CliRunner()
    res = runner.invoke(_app(), ["train", "sr", "-c", str(CONFIGS / "tiny" / "srcnn.yaml"), "--dry-run"])
    assert res.exit_code == 2 and "task 'baseline'" in res.output
    res = runner.invoke(
        _app(), ["train", "baseline", "-c", str(CONFIGS / "tiny" / "srcnn.yaml"), "--dry-run", "train.nope=1"]
    )
    assert res.exit_code == 2 and "train.nope" in res.output
