"""Offline pipelines: the production architectures, loadable, clearly untrained, reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from diarization.core.modeldir import check_model_dir, read_manifest
from diarization.modelmaking.offline import write_offline_pipeline


def test_production_layout_and_architectures(production_model_dir: Path) -> None:
    config = check_model_dir(production_model_dir)
    assert config["pipeline"]["name"] == "pyannote.audio.pipelines.SpeakerDiarization"
    assert config["pipeline"]["params"]["clustering"] == "VBxClustering"
    manifest = read_manifest(production_model_dir)
    assert manifest.trained is False and "untrained" in manifest.name and manifest.source == "offline"

    segmentation = torch.load(production_model_dir / "segmentation/pytorch_model.bin", weights_only=False)
    architecture = segmentation["pyannote.audio"]["architecture"]
    assert (architecture["module"], architecture["class"]) == ("pyannote.audio.models.segmentation.PyanNet", "PyanNet")
    specifications = segmentation["pyannote.audio"]["specifications"]
    assert specifications.powerset and specifications.num_powerset_classes == 7 and specifications.duration == 10.0
    assert segmentation["hyper_parameters"]["lstm"]["num_layers"] == 4

    embedding = torch.load(production_model_dir / "embedding/pytorch_model.bin", weights_only=False)
    assert embedding["pyannote.audio"]["architecture"]["class"] == "WeSpeakerResNet34"
    parameters = sum(tensor.numel() for tensor in embedding["state_dict"].values())
    assert 6_000_000 < parameters < 7_500_000  # ResNet34 speaker embedding: ~6.6 M parameters

    transform = np.load(production_model_dir / "plda/xvec_transform.npz")
    assert transform["lda"].shape == (256, 128) and transform["mean1"].shape == (256,)
    plda = np.load(production_model_dir / "plda/plda.npz")
    assert (plda["psi"] > 0).all()


COMMUNITY_1_CONFIG = {
    "dependencies": {"pyannote.audio": "4.0.0"},
    "pipeline": {
        "name": "pyannote.audio.pipelines.SpeakerDiarization",
        "params": {
            "clustering": "VBxClustering",
            "embedding": "$model/embedding",
            "embedding_batch_size": 32,
            "embedding_exclude_overlap": True,
            "plda": "$model/plda",
            "segmentation": "$model/segmentation",
            "segmentation_batch_size": 32,
        },
    },
    "params": {
        "clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8},
        "segmentation": {"min_duration_off": 0.0},
    },
}
"""pyannote/speaker-diarization-community-1's config.yaml values (as ../shared/NOTES.md records them), written
out by hand so that a change to the generator cannot move the expectation with it."""


def test_production_config_is_community_1s_config(production_model_dir: Path) -> None:
    assert yaml.safe_load((production_model_dir / "config.yaml").read_text()) == COMMUNITY_1_CONFIG


def test_same_seed_same_weights(tmp_path: Path) -> None:
    first = write_offline_pipeline(tmp_path / "a", variant="tiny", seed=7)
    second = write_offline_pipeline(tmp_path / "b", variant="tiny", seed=7)
    other = write_offline_pipeline(tmp_path / "c", variant="tiny", seed=8)
    load = lambda path: torch.load(path / "embedding/pytorch_model.bin", weights_only=False)["state_dict"]  # noqa: E731
    a, b, c = load(first), load(second), load(other)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)
    assert not (tmp_path / "a.partial").exists()
