"""Validation of speaker hints and environment settings: clear messages, stable codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from diarization.core.config import Settings, available_cpus
from diarization.core.hints import MAX_SPEAKERS_LIMIT, SpeakerHints
from diarization.errors import ConfigurationError, InvalidParameterError


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"num_speakers": -1}, "out of range"),
        ({"num_speakers": 0}, "out of range"),
        ({"max_speakers": MAX_SPEAKERS_LIMIT + 1}, "out of range"),
        ({"min_speakers": 3, "max_speakers": 2}, "greater than"),
        ({"num_speakers": 2, "min_speakers": 1}, "not both"),
        ({"num_speakers": 2, "max_speakers": 3}, "not both"),
        ({"num_speakers": "2"}, "whole number"),
        ({"num_speakers": 2.5}, "whole number"),
        ({"min_speakers": True}, "whole number"),
    ],
)
def test_invalid_hints(values: dict, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message) as caught:
        SpeakerHints.from_mapping(values)
    assert caught.value.code == "INVALID_PARAMETER" and caught.value.http_status == 400


def test_valid_hints() -> None:
    hints = SpeakerHints.from_mapping({"min_speakers": 2, "max_speakers": 2, "num_speakers": None})
    assert hints.as_pipeline_kwargs() == {"min_speakers": 2, "max_speakers": 2}
    assert SpeakerHints().as_pipeline_kwargs() == {}


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.device == "auto" and settings.num_threads == 0
    assert settings.effective_threads == available_cpus() >= 1
    assert settings.max_audio_seconds == 4 * 3600 and settings.max_audio_bytes == 1024**3
    assert settings.fast_embeddings is True


def test_environment_values_and_overrides() -> None:
    env = {
        "MODEL_DIR": "/models/x",
        "DEVICE": "CPU",
        "NUM_THREADS": "3",
        "MAX_AUDIO_SECONDS": "90.5",
        "MAX_AUDIO_BYTES": "1000",
        "EMBEDDING_BATCH_SIZE": "8",
        "SEGMENTATION_BATCH_SIZE": " ",
        "FAST_EMBEDDINGS": "Off",
    }
    settings = Settings.from_env(env, num_threads=1)
    assert settings.model_dir == Path("/models/x") and settings.device == "cpu"
    assert settings.num_threads == 1 and settings.effective_threads == 1
    assert settings.max_audio_seconds == 90.5 and settings.max_audio_bytes == 1000
    assert settings.embedding_batch_size == 8 and settings.segmentation_batch_size is None
    assert settings.fast_embeddings is False
    assert Settings.from_env({"FAST_EMBEDDINGS": "1"}).fast_embeddings is True


def test_every_problem_is_reported_at_once() -> None:
    env = {
        "DEVICE": "tpu",
        "NUM_THREADS": "two",
        "MAX_AUDIO_SECONDS": "-5",
        "MAX_AUDIO_BYTES": "0",
        "EMBEDDING_BATCH_SIZE": "1.5",
        "FAST_EMBEDDINGS": "maybe",
    }
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)
    problems = caught.value.details["problems"]
    assert len(problems) == 6
    message = caught.value.message
    for fragment in (
        "DEVICE='tpu'",
        "NUM_THREADS='two'",
        "MAX_AUDIO_SECONDS=-5",
        "MAX_AUDIO_BYTES=0",
        "EMBEDDING_BATCH_SIZE='1.5'",
        "FAST_EMBEDDINGS='maybe' is not true or false",
        "See docs/configuration.md.",
    ):
        assert fragment in message
    assert caught.value.code == "CONFIGURATION_ERROR"


@pytest.mark.parametrize("value", ["nan", "inf", "0"])
def test_max_audio_seconds_must_be_positive_and_finite(value: str) -> None:
    with pytest.raises(ConfigurationError, match="MAX_AUDIO_SECONDS"):
        Settings.from_env({"MAX_AUDIO_SECONDS": value})
