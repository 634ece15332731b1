"""The on-disk model directory: layout, manifest and validation.

Layout (that of pyannote/speaker-diarization-community-1)::

    config.yaml                       pipeline class, params, `$model/...` references
    segmentation/pytorch_model.bin
    embedding/pytorch_model.bin
    plda/xvec_transform.npz, plda/plda.npz
    diarization-model.json            our manifest: name, revision, trained or not

``bake`` (real weights) and ``offline`` (random weights) both write it, so the
loader has a single path. Validation runs before pyannote is imported so a bad
directory fails in milliseconds with a message naming the directory and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from diarization.errors import ModelInvalidError, ModelNotFoundError

CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "diarization-model.json"
MODEL_FILE = "pytorch_model.bin"
PLDA_FILES = ("xvec_transform.npz", "plda.npz")
LOCAL_PREFIX = "$model/"

FIX = (
    "Point MODEL_DIR (or --model-dir) at a directory written by `python -m diarization.modelmaking.bake` "
    "(pretrained) or `python -m diarization.modelmaking.offline` (untrained, for tests), e.g. `make model`."
)


@dataclass(frozen=True)
class ModelManifest:
    """Where the weights came from; reported in every result."""

    name: str
    revision: str | None
    trained: bool
    source: str
    """``huggingface`` for baked pretrained weights, ``offline`` for generated random weights."""
    created_at: str | None = None
    pyannote_version: str | None = None
    stand_in: str | None = None
    """Which part is not the real pipeline's, and what replaces it; None when nothing is."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_manifest(model_dir: Path, manifest: ModelManifest) -> None:
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")


def read_manifest(model_dir: Path) -> ModelManifest:
    """The manifest, or one derived from the directory for a pipeline copied in by hand (assumed trained)."""
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        return ModelManifest(name=model_dir.name, revision=None, trained=True, source="local")
    try:
        data = json.loads(path.read_text())
        return ModelManifest(**data)
    except (ValueError, TypeError) as error:
        raise ModelInvalidError(
            f"Model directory {str(model_dir)!r} has an unreadable {MANIFEST_FILE} ({error}). {FIX}",
            model_dir=str(model_dir),
        ) from error


def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / CONFIG_FILE
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ModelInvalidError(
            f"Model directory {str(model_dir)!r} has an unreadable {CONFIG_FILE} ({error}). {FIX}",
            model_dir=str(model_dir),
        ) from error
    if not isinstance(config, dict) or not isinstance(config.get("pipeline"), dict) or "name" not in config["pipeline"]:
        raise ModelInvalidError(
            f"{path} is not a pyannote pipeline config (no pipeline.name). {FIX}", model_dir=str(model_dir)
        )
    return config


def check_model_dir(model_dir: Path) -> dict[str, Any]:
    """Fail fast and clearly on a missing or incomplete directory; returns the parsed config."""
    if not model_dir.is_dir():
        raise ModelNotFoundError(f"Model directory {str(model_dir)!r} does not exist. {FIX}", model_dir=str(model_dir))
    if not (model_dir / CONFIG_FILE).is_file():
        raise ModelNotFoundError(
            f"Model directory {str(model_dir)!r} has no {CONFIG_FILE}. {FIX}", model_dir=str(model_dir)
        )
    config = read_config(model_dir)
    params = config["pipeline"].get("params") or {}
    remote = [
        f"{key}={value}"
        for key in ("segmentation", "embedding", "plda")
        if isinstance(value := params.get(key), str) and not value.startswith(LOCAL_PREFIX)
    ]
    if remote:
        raise ModelInvalidError(
            f"Model directory {str(model_dir)!r} is not self-contained: {CONFIG_FILE} refers to "
            f"{', '.join(remote)} outside the directory, which needs the Hugging Face hub. {FIX}",
            model_dir=str(model_dir),
        )
    missing = [str(path.relative_to(model_dir)) for path in _required_files(model_dir, config) if not path.is_file()]
    if missing:
        raise ModelNotFoundError(
            f"Model directory {str(model_dir)!r} is incomplete: missing {', '.join(missing)}. {FIX}",
            model_dir=str(model_dir),
            missing=missing,
        )
    return config


def _required_files(model_dir: Path, config: dict[str, Any]) -> Iterator[Path]:
    params = config["pipeline"].get("params") or {}
    for key, subfolder in (
        (key, value[len(LOCAL_PREFIX) :].split("@")[0])
        for key, value in params.items()
        if isinstance(value, str) and value.startswith(LOCAL_PREFIX)
    ):
        if key == "plda":
            yield from (model_dir / subfolder / name for name in PLDA_FILES)
        else:
            yield model_dir / subfolder / MODEL_FILE
