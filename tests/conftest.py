"""Shared fixtures: the real `conf/` composed with small overrides, MLflow stores in tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from searchlab.config import CONF_DIR, Config, from_dictconfig, register_schemas

register_schemas()


def compose_config(*overrides: str) -> Config:
    """Compose the project's real `conf/` with Hydra overrides and validate it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return from_dictconfig(cfg)


@pytest.fixture
def make_config() -> Callable[..., Config]:
    return compose_config


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    """A fresh SQLite MLflow store in tmp_path."""
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def require_system_package(available: bool, reason: str) -> None:
    """Skip a test whose Debian package is missing, except under CI (CI=true): `.ci/run` installs it there,
    so a broken install must fail rather than hide the test."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (.ci/run should have installed it)")
    pytest.skip(reason)
