"""The model-free engine double (tests/support/engine_double.py) that the use-case tests run on: what they may rely
on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from diarization.core.audio import DecodedAudio
from diarization.core.engine import SILENCE_WARNING, Diarizer, decode_within_limits
from diarization.core.hints import SpeakerHints
from diarization.core.result import UNTRAINED_WARNING, AudioFacts, load_schema
from diarization.errors import VoiceprintModelMismatchError
from support.engine_double import DIMENSION, NAME, LoudnessPipeline, model_free_diarizer

RATE = 16_000


@pytest.fixture()
def diarizer() -> Diarizer:
    return model_free_diarizer()


def decoded(samples: np.ndarray, rate: int = RATE) -> DecodedAudio:
    facts = AudioFacts(len(samples) / rate, rate, 1, "pcm_f32le", "test", samples.nbytes)
    return DecodedAudio(samples.astype(np.float32), facts, rate)


def calls(diarizer: Diarizer) -> int:
    pipeline = diarizer.loaded.pipeline
    assert isinstance(pipeline, LoudnessPipeline)
    return pipeline.calls


def test_the_sample_gives_turns_within_the_audio_where_it_is_loud(diarizer: Diarizer, sample_path: Path) -> None:
    result = diarizer.diarize(sample_path)
    duration = result.audio.duration_seconds
    assert duration == pytest.approx(30.0, abs=0.1)
    assert len(result.segments) >= 2 and result.segments == sorted(result.segments, key=lambda s: s.start)
    assert all(0.0 <= s.start < s.end <= duration for s in result.segments)
    assert {s.speaker for s in result.segments} == {"SPEAKER_00", "SPEAKER_01"}  # two by default
    assert result.exclusive_segments == result.segments  # its turns never overlap
    assert result.warnings == [UNTRAINED_WARNING]
    assert result.model.name == NAME and not result.model.trained and result.model.device == "cpu"
    assert diarizer.embedding_model().dimension == DIMENSION
    jsonschema.validate(result.to_dict(), load_schema())
    assert diarizer.diarize(sample_path).segments == result.segments  # deterministic


def test_turns_follow_loudness_and_pauses(diarizer: Diarizer) -> None:
    """1-3 s and 5-8 s loud, silent elsewhere: two turns, each its own speaker."""
    samples = np.zeros(10 * RATE, dtype=np.float32)
    for start, stop in ((1, 3), (5, 8)):
        samples[start * RATE : stop * RATE] = 0.5 * np.sin(np.arange((stop - start) * RATE) * 0.1)
    result = diarizer.diarize_decoded(decoded(samples), SpeakerHints(), "two-turns")
    assert [(s.start, s.end, s.speaker) for s in result.segments] == [
        (1.0, 3.0, "SPEAKER_00"),
        (5.0, 8.0, "SPEAKER_01"),
    ]


@pytest.mark.parametrize(
    ("hints", "count"),
    [
        (SpeakerHints(num_speakers=1), 1),
        (SpeakerHints(num_speakers=2), 2),
        (SpeakerHints(num_speakers=7), 7),
        (SpeakerHints(max_speakers=1), 1),
        (SpeakerHints(min_speakers=4), 4),
        (SpeakerHints(min_speakers=1, max_speakers=3), 2),
    ],
)
def test_speaker_hints_are_honoured(diarizer: Diarizer, sample_path: Path, hints: SpeakerHints, count: int) -> None:
    result = diarizer.diarize(sample_path, hints)
    assert len(result.speakers) == count and len(result.speaker_embeddings) == count
    assert result.parameters == hints.to_dict()


def test_one_continuous_sound_still_gives_the_speakers_asked_for(diarizer: Diarizer) -> None:
    steady = 0.3 * np.sin(np.arange(6 * RATE) * 0.05).astype(np.float32)
    result = diarizer.diarize_decoded(decoded(steady), SpeakerHints(num_speakers=3), "steady")
    assert len(result.speakers) == 3
    assert sum(s.end - s.start for s in result.segments) == pytest.approx(6.0)


def test_silence_gives_the_silence_warning_without_a_pipeline_call(diarizer: Diarizer) -> None:
    result = diarizer.diarize_decoded(decoded(np.zeros(5 * RATE, dtype=np.float32)), SpeakerHints(), "quiet")
    assert result.segments == [] and result.speakers == []
    assert result.warnings == [UNTRAINED_WARNING, SILENCE_WARNING]
    assert calls(diarizer) == 0
    diarizer.diarize_decoded(decoded(np.full(RATE, 0.1, dtype=np.float32)), SpeakerHints(), "loud")
    assert calls(diarizer) == 1


def test_enrolling_then_identifying_names_the_speaker(diarizer: Diarizer, sample_path: Path) -> None:
    samples, _ = decode_within_limits(diarizer.settings, sample_path)
    alice, enrolled = diarizer.enroll_decoded(samples, "alice", "alice.wav")
    assert alice.model == diarizer.embedding_model() and alice.model.name == NAME
    dominant = max(enrolled.speakers, key=lambda speaker: speaker.speaking_seconds).id
    assert alice.enrollment["speaker"] == dominant

    named = diarizer.diarize_decoded(samples, SpeakerHints(), "again", voiceprints=[alice])
    names = {speaker.id: (speaker.name, speaker.similarity) for speaker in named.speakers}
    assert names[dominant] == ("alice", 1.0)
    assert all(name is None for label, (name, _) in names.items() if label != dominant)
    assert named.identification == {"threshold": diarizer.settings.voiceprint_threshold, "voiceprints": ["alice"]}

    other = model_free_diarizer(name="another-model")
    with pytest.raises(VoiceprintModelMismatchError):
        other.diarize_decoded(samples, SpeakerHints(), "elsewhere", voiceprints=[alice])
    assert calls(other) == 0  # refused before diarizing


def test_the_double_never_imports_pyannote_audio() -> None:
    """What keeps it fast: pyannote.audio (and lightning) cost seconds to import. (Its pipeline is called without
    the engine here, which would import torch only to make the waveform.)"""
    code = (
        "import sys, numpy as np; from support.engine_double import model_free_diarizer; "
        "model_free_diarizer().loaded.pipeline({'waveform': np.ones((1, 16000)), 'sample_rate': 16000}); "
        "print(sorted({'.'.join(m.split('.')[:2]) for m in sys.modules if m.startswith('pyannote.')}), "
        "'lightning' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join(str(root / folder) for folder in ("function", "tests", "infra"))
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['pyannote.core'] False"
