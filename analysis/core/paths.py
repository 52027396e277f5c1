"""Where models live on this machine: the repository (and its zoo/ of demo checkpoints, or $LOGITSCOPE_ZOO) and the
cache folder of converted real models ($LOGITSCOPE_MODELS, default ~/.cache/logitscope/models)."""
from __future__ import annotations

import os
import site
import sysconfig
from pathlib import Path

from analysis.core.gguf import SOURCE_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the packages: the clone, or site-packages
SHARE = ("share", "logitscope")  # where a wheel installs app.py, pages/, zoo/ and data/ (pyproject's data-files)


def _data_root() -> Path:
    """The folder of app.py, pages/, zoo/ and data/: the clone (also under an editable install), else the installed
    copy in <prefix>/share/logitscope (the environment's prefix, then the user's, as pip installs them)."""
    if (REPO_ROOT / "app.py").is_file():
        return REPO_ROOT
    for base in (sysconfig.get_path("data"), site.getuserbase()):
        installed = Path(base).joinpath(*SHARE)
        if (installed / "app.py").is_file():
            return installed
    return REPO_ROOT


DATA_ROOT = _data_root()


def zoo_dir() -> Path:
    """Where the demo checkpoints live: zoo/ beside the app, or $LOGITSCOPE_ZOO."""
    return Path(os.environ.get("LOGITSCOPE_ZOO") or DATA_ROOT / "zoo")


def zoo_models() -> list[str]:
    """Names of the demo checkpoints shipped under zoo/."""
    zd = zoo_dir()
    if not zd.is_dir():
        return []
    return sorted(p.name for p in zd.iterdir() if (p / "config.json").is_file())


MODELS_ENV = "LOGITSCOPE_MODELS"


def models_dir() -> Path:
    """The cache folder of converted real models: $LOGITSCOPE_MODELS or ~/.cache/logitscope/models."""
    env = os.environ.get(MODELS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "logitscope" / "models"


def real_models() -> list[str]:
    """Names of the converted real models in the models cache (folders with config.json and weights)."""
    d = models_dir()
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if (p / "config.json").is_file() and (p / SOURCE_FILE).is_file())
