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
