"""Every YAML shipped under apps/<app>/ loads into that app's root config class (issue 7: "Every shipped config
loads in a test"), and survives a save → load round trip."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest

import forge.config

REPO = Path(__file__).resolve().parents[3]
CONFIGS = sorted(p for p in (REPO / "apps").glob("*/*.yaml"))


def root_config_class(app: str) -> type:
    """The one dataclass named ``*Config`` defined in ``apps/<app>/config.py``."""
    mod = importlib.import_module(f"apps.{app}.config")
    roots = [v for k, v in vars(mod).items() if k.endswith("Config") and dataclasses.is_dataclass(v)
             and getattr(v, "__module__", "") == mod.__name__]
    assert len(roots) == 1, f"apps/{app}/config.py should define exactly one *Config root class, found {roots}"
    return roots[0]


def test_there_are_shipped_configs():
    assert CONFIGS, "no apps/*/*.yaml found"


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO)) for p in CONFIGS])
def test_shipped_config_loads(path, tmp_path):
    cls = root_config_class(path.parent.name)
    cfg = forge.config.load(cls, path)
    assert isinstance(cfg, cls)
    again = forge.config.load(cls, forge.config.save(cfg, tmp_path / "config.yaml"))
    assert again == cfg


def test_grpo_cli_overrides_as_in_the_readme():
    """`python -m apps.grpo.main --config apps/grpo/<cfg>.yaml --trainer.procs 2` parses (issue 7, "Done when")."""
    cls = root_config_class("grpo")
    path = REPO / "apps" / "grpo" / "demo_arith_cpu.yaml"
    if not path.exists():
        pytest.skip("apps/grpo/demo_arith_cpu.yaml is not shipped")
    cfg = forge.config.parse_cli(cls, ["--config", str(path), "--trainer.procs", "2", "run.seed=3"])
    assert cfg.trainer.procs == 2 and cfg.run.seed == 3
    with pytest.raises(forge.config.ConfigError, match="did you mean 'trainer.procs'"):
        forge.config.parse_cli(cls, ["--config", str(path), "--trainer.proc", "2"])
