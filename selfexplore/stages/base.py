"""`base`: the model every training stage starts from.

With `model.path` set, that directory (or hub name) is the base model and nothing is written. Otherwise the tiny
model of the embedded default is built from scratch into `base/model/`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from selfexplore.config import RunConfig
from selfexplore.errors import ConfigError
from selfexplore.models import build_tiny_model
from selfexplore.run_dir import BASE_MODEL, RunDir

_HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


def check_model_path(path: str) -> None:
    if Path(path).is_dir():
        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"model.path: {path} has no config.json; expected a Hugging Face model directory")
        return
    if _HUB_NAME.match(path) and os.environ.get("HF_HUB_OFFLINE") != "1":
        return  # a hub name: the training workers download it
    raise ConfigError(f"model.path: model directory not found: {path}")


def run(cfg: RunConfig, run_dir: RunDir) -> dict:
    if cfg.model.path:
        check_model_path(cfg.model.path)
        return {"model": cfg.model.path}
    n_params = build_tiny_model(cfg.model.tiny, run_dir.path(BASE_MODEL))
    return {"model": "tiny", "parameters": n_params}
