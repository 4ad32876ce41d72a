"""forge.config: YAML + CLI overrides → frozen dataclasses, strict errors with suggestions."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from forge import config as fc
from forge.config import ConfigError, FrozenDict


@dataclass(frozen=True)
class Trainer:
    procs: int = 1  # processes
    lr: float = 1e-3  # learning rate
    loss: Literal["grpo", "dapo", "cispo"] = "grpo"  # loss name
    betas: tuple[float, float] = (0.9, 0.95)  # Adam betas


@dataclass(frozen=True)
class Generator:
    model: str = "tiny"  # model path
    engine_args: dict[str, Any] = field(default_factory=dict)  # passed to the engine
    stop: list[str] = field(default_factory=list)  # stop strings
    max_tokens: int | None = None  # None = engine default


@dataclass(frozen=True)
class Ref:
    beta: float = 0.1  # KL coefficient


@dataclass(frozen=True)
class Eval:
    trainer: Trainer = field(default_factory=lambda: Trainer(procs=3, loss="cispo"))  # a customised default
    every: int = 5  # cadence


@dataclass(frozen=True)
class App:
    name: str  # run name (required)
    steps: int = 10  # optimizer steps
    enabled: bool = True  # flag
    out: Path = Path("runs")  # output folder
    trainer: Trainer = field(default_factory=Trainer)  # trainer section
    generator: Generator = field(default_factory=Generator)  # generator section
    reference: Ref | None = None  # None = no reference model
    eval: Eval = field(default_factory=Eval)  # nested section whose default differs from the class defaults

    @property
    def total(self) -> int:  # derived values are properties
        return self.steps * self.trainer.procs


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_yaml_tree_maps_onto_dataclasses(tmp_path):
    p = write(tmp_path, """
name: demo
steps: 20
trainer: {procs: 2, lr: 1e-6, loss: dapo, betas: [0.8, 0.9]}
generator:
  engine_args: {max_model_len: 128, enforce_eager: true}
  stop: ["\\n"]
reference: {beta: 0.05}
""")
    cfg = fc.load(App, p)
    assert cfg.trainer.procs == 2 and cfg.trainer.lr == 1e-6 and isinstance(cfg.trainer.lr, float)
    assert cfg.trainer.loss == "dapo" and cfg.trainer.betas == (0.8, 0.9)
    assert cfg.generator.engine_args == {"max_model_len": 128, "enforce_eager": True}
    assert cfg.generator.stop == ("\n",)
    assert cfg.reference == Ref(beta=0.05)
    assert cfg.out == Path("runs") and cfg.total == 40


def test_cli_override_forms(tmp_path):
    p = write(tmp_path, "name: demo\n")
    argv = ["--config", str(p), "--trainer.procs", "4", "--trainer.lr=3e-4", "steps=7", "--name", "x y",
            "generator.engine_args.max_model_len=256", "--generator.stop=a,b", "--reference.beta", "0.2",
            "--generator.max_tokens", "null", "--enabled", "false", "--trainer.betas", "[0.5, 0.6]"]
    cfg = fc.parse_cli(App, argv)
    assert cfg.trainer.procs == 4 and cfg.trainer.lr == 3e-4 and cfg.steps == 7 and cfg.name == "x y"
    assert cfg.generator.engine_args == {"max_model_len": 256}
    assert cfg.generator.stop == ("a", "b") and cfg.generator.max_tokens is None
    assert cfg.reference == Ref(beta=0.2) and cfg.enabled is False and cfg.trainer.betas == (0.5, 0.6)


def test_str_override_is_verbatim():
    cfg = fc.load(App, data={"name": "a"}, overrides=["name=007", "generator.model=null"])
    assert cfg.name == "007" and cfg.generator.model == "null"


def test_unknown_key_suggests_closest(tmp_path):
    p = write(tmp_path, "name: d\ntrainer: {prcs: 2}\n")
    with pytest.raises(ConfigError) as e:
        fc.load(App, p)
    assert "trainer.prcs: unknown key 'prcs'" in str(e.value)
    assert "did you mean 'trainer.procs'?" in str(e.value)
    with pytest.raises(ConfigError, match="did you mean 'generator'"):
        fc.load(App, data={"name": "d"}, overrides=["--genrator.model=x"])
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        fc.parse_cli(App, ["name=d", "--step", "3"])


def test_wrong_type_names_key_value_and_type():
    with pytest.raises(ConfigError) as e:
        fc.load(App, data={"name": "d", "trainer": {"procs": "four", "lr": "fast"}, "enabled": "maybe"})
    msg = str(e.value)
    assert "trainer.procs: got 'four' (str); expected int" in msg
    assert "trainer.lr: got 'fast' (str); expected float" in msg
    assert "enabled: got 'maybe' (str); expected bool" in msg
    assert "3 problems" in msg
    with pytest.raises(ConfigError, match=r"trainer.procs: got '2.5' \(from the command line\); expected int"):
        fc.load(App, data={"name": "d"}, overrides=["trainer.procs=2.5"])
    with pytest.raises(ConfigError, match=r"trainer.loss: got 'grop'.*expected one of \['grpo', 'dapo', 'cispo'\] \(did you mean 'grpo'\?\)"):
        fc.load(App, data={"name": "d", "trainer": {"loss": "grop"}})
    with pytest.raises(ConfigError, match=r"trainer.betas: got \[0.1\] \(list\) with 1 items; expected tuple\[float, float\]"):
        fc.load(App, data={"name": "d", "trainer": {"betas": [0.1]}})
    with pytest.raises(ConfigError, match=r"steps: got True \(bool\); expected int"):
        fc.load(App, data={"name": "d", "steps": True})


def test_missing_required_and_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match=r"name: missing required key \(expected str\)"):
        fc.load(App)
    with pytest.raises(ConfigError, match="has no value"):
        fc.parse_cli(App, ["--steps"])
    with pytest.raises(ConfigError, match="does not exist"):
        fc.load(App, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="has no sub-keys"):
        fc.load(App, data={"name": "d"}, overrides=["steps.x=1"])


def test_immutable_and_round_trip(tmp_path):
    cfg = fc.load(App, data={"name": "d", "generator": {"engine_args": {"a": [1, 2]}}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.steps = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="immutable"):
        cfg.generator.engine_args["b"] = 1
    assert cfg.generator.engine_args["a"] == (1, 2)
    assert pickle.loads(pickle.dumps(cfg)) == cfg and isinstance(pickle.loads(pickle.dumps(FrozenDict(a=1))), FrozenDict)
    path = fc.save(cfg, tmp_path / "run" / "config.yaml")
    assert fc.load(App, path) == cfg
    assert fc.to_dict(cfg)["out"] == "runs" and fc.to_dict(cfg)["reference"] is None


def test_negative_number_values_and_help(capsys):
    cfg = fc.parse_cli(App, ["name=d", "--trainer.lr", "-0.5"])
    assert cfg.trainer.lr == -0.5
    with pytest.raises(SystemExit):
        fc.parse_cli(App, ["--help"])
    out = capsys.readouterr().out
    assert "--trainer.procs: int = 1  # processes" in out and "--name: str (required)  # run name (required)" in out


def test_partial_section_keeps_the_fields_default_instance():
    """Overriding one key of a section whose default is a customised instance keeps that instance's other values."""
    cfg = fc.load(App, data={"name": "d", "eval": {"trainer": {"lr": 0.5}}}, overrides=["eval.every=9"])
    assert cfg.eval == Eval(trainer=Trainer(procs=3, loss="cispo", lr=0.5), every=9)
    assert fc.load(App, data={"name": "d"}).eval.trainer == Trainer(procs=3, loss="cispo")
