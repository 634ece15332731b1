"""The core engine on real audio through the real pyannote pipeline (offline random weights)."""

from __future__ import annotations

import itertools
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from diarization.core.audio import DecodedAudio
from diarization.core.config import Settings
from diarization.core.engine import SILENCE_WARNING, Diarizer
from diarization.core.hints import SpeakerHints
from diarization.core.loader import load_pipeline
from diarization.core.result import STAND_IN_WARNING, UNTRAINED_WARNING, AudioFacts, load_schema
from infra.media import FORMATS, speech_like

SCHEMA = load_schema()


@pytest.fixture(scope="module")
def diarizer(tiny_settings: Settings) -> Diarizer:
    return Diarizer.from_settings(tiny_settings)


def decoded(samples: np.ndarray) -> DecodedAudio:
    facts = AudioFacts(len(samples) / 16_000, 16_000, 1, "pcm_f32le", "wav", samples.nbytes)
    return DecodedAudio(samples=samples.astype(np.float32), facts=facts)


def assert_consistent(result_dict: dict) -> None:
    """Schema-valid, time-ordered, inside the audio, totals add up."""
    jsonschema.validate(result_dict, SCHEMA)
    duration = result_dict["audio"]["duration_seconds"]
    for key in ("segments", "exclusive_segments"):
        segments = result_dict[key]
        assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)
        assert all(0 <= s["start"] < s["end"] <= duration for s in segments)
    exclusive = result_dict["exclusive_segments"]
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(exclusive))
    totals: dict[str, float] = {}
    for segment in result_dict["segments"]:
        totals[segment["speaker"]] = totals.get(segment["speaker"], 0.0) + segment["end"] - segment["start"]
    assert {s["id"]: s["speaking_seconds"] for s in result_dict["speakers"]} == pytest.approx(totals, abs=0.01)
    assert result_dict["speaker_count"] == len(result_dict["speakers"])


def test_sample_recording(diarizer: Diarizer, sample_path: Path) -> None:
    result = diarizer.diarize(sample_path, input_uri="sample.wav")
    data = result.to_dict()
    assert_consistent(data)
    assert data["audio"]["duration_seconds"] == pytest.approx(30.0)
    assert data["input"] == {"uri": "sample.wav", "size_bytes": sample_path.stat().st_size}
    assert data["speaker_count"] >= 1 and data["segments"]
    assert data["model"]["trained"] is False and data["model"]["name"] == "offline-tiny-untrained"
    assert data["model"]["device"] == "cpu" and data["model"]["num_threads"] == 2
    assert data["model"]["stand_in"] is None
    assert UNTRAINED_WARNING in data["warnings"] and STAND_IN_WARNING not in data["warnings"]
    timings = data["timings"]
    assert timings["total_seconds"] == pytest.approx(timings["decode_seconds"] + timings["diarize_seconds"], abs=0.002)
    assert timings["real_time_factor"] == pytest.approx(timings["total_seconds"] / 30.0, rel=0.01, abs=1e-3)
    rttm = result.to_rttm().splitlines()
    assert len(rttm) == len(data["segments"])
    first = rttm[0].split()
    assert first[:3] == ["SPEAKER", "sample", "1"] and first[7] == data["segments"][0]["speaker"]
    assert float(first[3]) == pytest.approx(data["segments"][0]["start"], abs=1e-3)


@pytest.mark.parametrize("extension", sorted(FORMATS))
def test_every_format_through_the_pipeline(
    diarizer: Diarizer, encoded_samples: dict[str, Path], extension: str
) -> None:
    result = diarizer.diarize(encoded_samples[extension])
    data = result.to_dict()
    assert_consistent(data)
    assert data["audio"]["original"]["sample_rate"] == FORMATS[extension][3]
    assert data["audio"]["original"]["channels"] == FORMATS[extension][4]


def test_bytes_input_is_named_upload(diarizer: Diarizer, encoded_samples: dict[str, Path]) -> None:
    result = diarizer.diarize(encoded_samples["ogg"].read_bytes())
    assert result.input_uri == "upload"


@pytest.mark.parametrize(
    ("hints", "check"),
    [
        (SpeakerHints(num_speakers=2), lambda n: n == 2),
        (SpeakerHints(max_speakers=1), lambda n: n <= 1),
        (SpeakerHints(min_speakers=3, max_speakers=4), lambda n: 3 <= n <= 4),
    ],
)
def test_speaker_hints_reach_the_pipeline(diarizer: Diarizer, sample_path: Path, hints: SpeakerHints, check) -> None:
    data = diarizer.diarize(sample_path, hints).to_dict()
    assert_consistent(data)
    assert data["parameters"] == hints.to_dict()
    assert check(data["speaker_count"]), data["speakers"]


def test_pure_silence_is_a_valid_result_with_no_speakers(diarizer: Diarizer) -> None:
    result = diarizer.diarize_decoded(decoded(np.zeros(16_000 * 5)), SpeakerHints(), "silence.wav")
    data = result.to_dict()
    assert_consistent(data)
    assert data["speaker_count"] == 0 and data["segments"] == [] and data["overlap_seconds"] == 0
    assert SILENCE_WARNING in data["warnings"]
    assert result.to_rttm() == ""


def test_very_short_speech(diarizer: Diarizer) -> None:
    data = diarizer.diarize_decoded(decoded(speech_like(0.5)), SpeakerHints(), "short.wav").to_dict()
    assert_consistent(data)
    assert data["audio"]["duration_seconds"] == pytest.approx(0.5)


def test_pipeline_is_loaded_once_per_process(tiny_settings: Settings, diarizer: Diarizer) -> None:
    again = Diarizer.from_settings(tiny_settings)
    assert again.loaded is diarizer.loaded
    assert load_pipeline(tiny_settings).pipeline is diarizer.loaded.pipeline


def test_batch_size_overrides_are_applied(tiny_model_dir: Path) -> None:
    loaded = load_pipeline(
        Settings(model_dir=tiny_model_dir, num_threads=1, embedding_batch_size=4, segmentation_batch_size=8)
    )
    assert loaded.pipeline.embedding_batch_size == 4
    assert loaded.pipeline.segmentation_batch_size == 8


def test_production_architecture_pipeline_on_the_sample(production_model_dir: Path, sample_path: Path) -> None:
    """The community-1-shaped pipeline (PyanNet + ResNet34 + VBx) runs end to end on the real recording."""
    diarizer = Diarizer.from_settings(Settings(model_dir=production_model_dir, num_threads=2))
    data = diarizer.diarize(sample_path).to_dict()
    assert_consistent(data)
    assert data["model"]["name"] == "offline-production-untrained"
    assert data["speaker_count"] >= 1
