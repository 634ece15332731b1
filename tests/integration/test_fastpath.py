"""The fast embedding path gives upstream pyannote's embeddings and RTTM, on the same weights and audio.

Correctness, not timing (timings live in ``make bench``): every comparison runs pyannote's own
``SpeakerDiarization`` (loaded with ``Pipeline.from_pretrained``, untouched) next to the fast path.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pyannote.audio import Pipeline
from pyannote.audio.models.embedding.wespeaker.resnet import ResNet50
from pyannote.audio.pipelines import SpeakerDiarization
from pyannote.core import SlidingWindow, SlidingWindowFeature
from torch import nn

from diarization.core.config import Settings
from diarization.core.engine import Diarizer
from diarization.core.fastpath import SharedTrunkDiarization, optimize_trunk, supports_shared_trunk
from diarization.core.loader import load_pipeline
from infra.media import read_wav

TOLERANCE = 1e-4
"""The issue's bound on the largest absolute difference between fast and upstream embeddings."""


@pytest.fixture(scope="module")
def upstream(production_model_dir: Path) -> Any:
    pipeline = Pipeline.from_pretrained(production_model_dir)
    assert type(pipeline) is SpeakerDiarization
    return pipeline


@pytest.fixture(scope="module")
def fast(production_model_dir: Path) -> Any:
    loaded = load_pipeline(Settings(model_dir=production_model_dir, device="cpu", num_threads=2))
    assert loaded.fast_embeddings
    return loaded.pipeline


@pytest.fixture(scope="module")
def sample_file(sample_path: Path) -> dict[str, Any]:
    samples, rate = read_wav(sample_path)
    return {"waveform": torch.from_numpy(samples).unsqueeze(0), "sample_rate": rate, "uri": "sample"}


def run_with_embeddings(pipeline: Any, file: dict[str, Any], **hints: Any) -> tuple[Any, np.ndarray]:
    captured: list[np.ndarray] = []

    def hook(step: str, artifact: Any, file: Any = None, total: Any = None, completed: Any = None) -> None:
        if step == "embeddings" and total is None:
            captured.append(artifact)

    output = pipeline(dict(file), hook=hook, **hints)
    assert len(captured) == 1
    return output, captured[0]


def test_fast_path_is_the_default_and_leaves_upstream_untouched(fast: Any, upstream: Any) -> None:
    assert type(fast) is SharedTrunkDiarization and isinstance(fast, SpeakerDiarization)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast._embedding.model_.resnet.modules())
    # Folding happened on the fast pipeline's own model, not on a shared one.
    assert any(isinstance(m, nn.BatchNorm2d) for m in upstream._embedding.model_.resnet.modules())
    assert fast.embedding_batch_size == 1 and fast.segmentation_batch_size == 4
    assert upstream.segmentation_batch_size == 32


def test_switched_off_keeps_pyannotes_own_class(production_model_dir: Path) -> None:
    loaded = load_pipeline(Settings(model_dir=production_model_dir, device="cpu", num_threads=2, fast_embeddings=False))
    assert not loaded.fast_embeddings and type(loaded.pipeline) is SpeakerDiarization
    assert any(isinstance(m, nn.BatchNorm2d) for m in loaded.pipeline._embedding.model_.resnet.modules())


def test_models_without_a_split_trunk_fall_back_with_a_warning(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="diarization"):
        loaded = load_pipeline(Settings(model_dir=tiny_model_dir, device="cpu", num_threads=1))
    assert not loaded.fast_embeddings and type(loaded.pipeline) is SpeakerDiarization
    assert not supports_shared_trunk(loaded.pipeline)
    assert "fast embedding path not applicable" in caplog.text


@pytest.mark.parametrize("hints", [{}, {"num_speakers": 2}], ids=["free", "two-speakers"])
def test_sample_gives_identical_rttm_and_embeddings(
    fast: Any, upstream: Any, sample_file: dict[str, Any], hints: dict[str, Any]
) -> None:
    expected, expected_embeddings = run_with_embeddings(upstream, sample_file, **hints)
    actual, actual_embeddings = run_with_embeddings(fast, sample_file, **hints)
    assert actual_embeddings.shape == expected_embeddings.shape
    np.testing.assert_allclose(actual_embeddings, expected_embeddings, rtol=0, atol=TOLERANCE)
    assert actual.speaker_diarization.to_rttm() == expected.speaker_diarization.to_rttm()
    assert actual.exclusive_speaker_diarization.to_rttm() == expected.exclusive_speaker_diarization.to_rttm()
    assert len(expected.speaker_diarization) >= 1
    if hints:
        assert len(actual.speaker_diarization.labels()) == 2


def masks_with_every_case(num_frames: int) -> np.ndarray:
    """Binarized segmentations exercising each branch of upstream's mask choice.

    chunk 0: two speakers overlapping in the middle, one silent speaker
    chunk 1: a speaker whose few clean frames fall below the minimum (full mask used instead)
    chunk 2: the last frames NaN, as after partial stitching
    chunk 3: nobody speaks
    """
    data = np.zeros((4, num_frames, 3), dtype=np.float64)
    data[0, : num_frames // 2, 0] = 1
    data[0, num_frames // 3 :, 1] = 1
    data[1, :, 0] = 1
    data[1, :40, 1] = 1
    data[1, 40:43, 2] = 1
    data[2, : num_frames - 90, 2] = 1
    data[2, num_frames - 90 :, :] = np.nan
    return data


@pytest.mark.parametrize("exclude_overlap", [True, False])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_every_mask_case_matches_upstream(
    production_model_dir: Path, upstream: Any, sample_file: dict[str, Any], exclude_overlap: bool, batch_size: int
) -> None:
    fast = load_pipeline(
        Settings(model_dir=production_model_dir, device="cpu", num_threads=2, embedding_batch_size=batch_size)
    ).pipeline
    num_frames = upstream._segmentation.model.num_frames(10 * 16_000)
    segmentations = SlidingWindowFeature(
        masks_with_every_case(num_frames), SlidingWindow(start=0.0, duration=10.0, step=1.0)
    )
    progress: list[tuple[int, int]] = []

    def hook(step: str, artifact: Any, file: Any = None, total: Any = None, completed: Any = None) -> None:
        progress.append((completed, total))

    expected = upstream.get_embeddings(dict(sample_file), segmentations, exclude_overlap=exclude_overlap)
    actual = fast.get_embeddings(dict(sample_file), segmentations, exclude_overlap=exclude_overlap, hook=hook)
    assert actual.shape == expected.shape == (4, 3, 256)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOLERANCE)
    batches = -(-4 // batch_size)
    assert progress == [(i, batches) for i in range(batches + 1)]


def test_folding_keeps_bottleneck_resnets_equivalent() -> None:
    """The Bottleneck blocks of the larger WeSpeaker ResNets fold too (conv3/bn3, shortcut)."""
    torch.manual_seed(0)
    resnet = ResNet50(feat_dim=80, embed_dim=256).eval()
    for module in resnet.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    fbank = torch.randn(2, 200, 80)
    with torch.inference_mode():
        expected = resnet.forward_frames(fbank.clone())
        optimize_trunk(resnet)
        actual = resnet.forward_frames(fbank.clone())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in resnet.modules())
    torch.testing.assert_close(actual, expected, rtol=0, atol=TOLERANCE * float(expected.abs().max()))


def test_diarizer_reports_the_same_result_either_way(production_model_dir: Path, sample_path: Path) -> None:
    results = []
    for fast_embeddings in (True, False):
        settings = Settings(
            model_dir=production_model_dir, device="cpu", num_threads=2, fast_embeddings=fast_embeddings
        )
        results.append(Diarizer.from_settings(settings).diarize(sample_path, input_uri="sample.wav"))
    # Both paths hand over pyannote's per-speaker centroids (what voiceprints are made of and matched against).
    fast_centroids, upstream_centroids = (result.speaker_embeddings for result in results)
    assert set(fast_centroids) == set(upstream_centroids) == {speaker.id for speaker in results[0].speakers}
    for label, centroid in upstream_centroids.items():
        assert len(centroid) == 256
        np.testing.assert_allclose(fast_centroids[label], centroid, rtol=0, atol=TOLERANCE)
    fast_result, upstream_result = (result.to_dict() for result in results)
    assert fast_result["segments"] == upstream_result["segments"]
    assert fast_result["exclusive_segments"] == upstream_result["exclusive_segments"]
