"""Loading: missing, incomplete and corrupt model directories fail at load with the directory and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from diarization.core.config import Settings
from diarization.core.loader import load_pipeline
from diarization.core.modeldir import MANIFEST_FILE, check_model_dir, read_manifest
from diarization.errors import DeviceUnavailableError, ModelInvalidError, ModelNotFoundError


@pytest.fixture()
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


def load(model_dir: Path, **settings) -> None:
    load_pipeline(Settings(model_dir=model_dir, num_threads=1, **settings))


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist") as caught:
        load(tmp_path / "absent")
    assert str(tmp_path / "absent") in caught.value.message
    assert (
        "python -m diarization.modelmaking.offline" in caught.value.message
        and "diarization.modelmaking.bake" in caught.value.message
    )
    assert caught.value.code == "MODEL_NOT_FOUND"


def test_directory_without_config(model_copy: Path) -> None:
    (model_copy / "config.yaml").unlink()
    with pytest.raises(ModelNotFoundError, match="no config.yaml"):
        load(model_copy)


@pytest.mark.parametrize("missing", ["embedding/pytorch_model.bin", "segmentation/pytorch_model.bin", "plda/plda.npz"])
def test_incomplete_directory_lists_the_missing_files(model_copy: Path, missing: str) -> None:
    (model_copy / missing).unlink()
    with pytest.raises(ModelNotFoundError, match="incomplete") as caught:
        load(model_copy)
    assert caught.value.details["missing"] == [missing]


def test_corrupt_weights(model_copy: Path) -> None:
    (model_copy / "embedding" / "pytorch_model.bin").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelInvalidError, match="could not be loaded") as caught:
        load(model_copy)
    assert str(model_copy) in caught.value.message and caught.value.code == "MODEL_INVALID"


def test_unparsable_config(model_copy: Path) -> None:
    (model_copy / "config.yaml").write_text("pipeline: [unclosed")
    with pytest.raises(ModelInvalidError, match="unreadable config.yaml"):
        load(model_copy)


def test_config_without_pipeline(model_copy: Path) -> None:
    (model_copy / "config.yaml").write_text("params: {}\n")
    with pytest.raises(ModelInvalidError, match="no pipeline.name"):
        load(model_copy)


def test_config_that_needs_the_hub_is_rejected(model_copy: Path) -> None:
    config = yaml.safe_load((model_copy / "config.yaml").read_text())
    config["pipeline"]["params"]["segmentation"] = "pyannote/segmentation-3.0"
    (model_copy / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ModelInvalidError, match="not self-contained.*segmentation=pyannote/segmentation-3.0"):
        check_model_dir(model_copy)


def test_corrupt_manifest(model_copy: Path) -> None:
    (model_copy / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ModelInvalidError, match=MANIFEST_FILE):
        load(model_copy)


def test_directory_without_manifest_is_assumed_trained(model_copy: Path) -> None:
    """A pipeline copied in by hand (e.g. a Hugging Face snapshot) has no manifest of ours."""
    (model_copy / MANIFEST_FILE).unlink()
    manifest = read_manifest(model_copy)
    assert manifest.trained is True and manifest.name == "model" and manifest.source == "local"
    load(model_copy)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where no GPU exists")
def test_cuda_requested_without_a_gpu(tiny_model_dir: Path) -> None:
    with pytest.raises(DeviceUnavailableError, match="DEVICE=auto") as caught:
        load(tiny_model_dir, device="cuda")
    assert caught.value.code == "DEVICE_UNAVAILABLE"
