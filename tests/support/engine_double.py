"""A real :class:`Diarizer` around a model-free stand-in for pyannote's pipeline, for the fast test tier.

Why it exists: the use cases in ``diarization.service`` (DiarizeObject, CompleteInference, DiarizeSync, the
voiceprint use cases, AbandonObject, EndOverdueJobs ...) are tested for their orchestration: what is published
and where, in what order, idempotency, routing, the plumbing of identification. None of that depends on what a
neural network hears, yet building a pipeline (even the tiny offline one) costs an import of pyannote.audio and
lightning, a generated model directory and seconds of CPU per file. :func:`model_free_diarizer` keeps everything
of the engine that makes a result real: :meth:`Diarizer.diarize_decoded` and :meth:`Diarizer.diarize_with` run
as in production (warnings, the silence rule, segments clipped to the audio, timings, centroids, identification,
the voiceprint model check); only ``LoadedPipeline.pipeline`` is replaced, by :class:`LoudnessPipeline`.

What it is not: a diarization. Its turns follow loudness only (frames within :data:`SPEECH_DB` of the loudest are
speech, pauses of :data:`MIN_PAUSE_SECONDS` end a turn), its speakers are assigned by alternating between turns,
and a speaker's "embedding" identifies its label, not its voice. The neural network is tested elsewhere, on real
audio with real pyannote (test_engine.py, test_identification.py, test_lambda.py, test_quality.py ...).
Its manifest says it is untrained, so every result it makes carries the UNTRAINED warning and names
:data:`NAME` as its model.

pyannote.core (Annotation, Segment) is cheap to import; pyannote.audio is not (seconds, and lightning), so it is
never imported here.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyannote.core import Annotation, Segment

from diarization.core.config import Settings
from diarization.core.engine import Diarizer
from diarization.core.hints import MAX_SPEAKERS_LIMIT
from diarization.core.loader import LoadedPipeline
from diarization.core.modeldir import ModelManifest
from diarization.core.runtime import DeviceInfo

NAME = "model-free-test-double"
"""The model name its results and voiceprints carry: never a real model's."""
REVISION = "1"
SOURCE = "test-double"
DIMENSION = MAX_SPEAKERS_LIMIT
"""Of the speaker embeddings: one orthogonal unit vector per speaker, for any speaker count a request may ask."""
SAMPLE_RATE = 16_000
FRAME_SECONDS = 0.1
SPEECH_DB = -30.0
"""A frame is speech when its RMS is within this many dB of the loudest frame's."""
MIN_PAUSE_SECONDS = 0.3
"""A quieter stretch shorter than this does not end a turn."""
DEFAULT_SPEAKERS = 2
"""Without hints: two speakers (one if there is a single turn), clamped to min_speakers/max_speakers."""
UNUSED_MODEL_DIR = Path("/nonexistent/model-free-test-double")
"""The default settings' model directory: nothing reads it."""


@dataclass(frozen=True)
class Output:
    """pyannote's ``DiarizeOutput``, the three fields the engine reads."""

    speaker_diarization: Annotation
    exclusive_speaker_diarization: Annotation
    speaker_embeddings: np.ndarray
    """One row per label of ``speaker_diarization.labels()`` (sorted), :data:`DIMENSION` columns."""


@dataclass(frozen=True)
class Embedding:
    """What the engine reads of pyannote's embedding model: its dimension (:meth:`Diarizer.embedding_model`)."""

    dimension: int = DIMENSION


class LoudnessPipeline:
    """Called like ``pyannote.audio.pipelines.SpeakerDiarization``: ``pipeline(file, hook=None, num_speakers=None,
    min_speakers=None, max_speakers=None)`` with ``file = {"waveform": (1, samples) tensor, "sample_rate": 16000}``.

    Deterministic: the same samples and hints give the same turns and labels. ``calls`` counts the runs (the
    silence rule's "no pipeline call" is observable)."""

    def __init__(self) -> None:
        self._embedding = Embedding()
        self.calls = 0

    def __call__(
        self,
        file: Mapping[str, Any],
        hook: Callable[..., Any] | None = None,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
    ) -> Output:
        self.calls += 1
        rate = int(file["sample_rate"])
        if rate != SAMPLE_RATE:
            raise ValueError(f"expected {SAMPLE_RATE} Hz audio, got {rate} Hz")
        waveform = np.asarray(file["waveform"], dtype=np.float32)
        if waveform.ndim != 2 or waveform.shape[0] != 1:
            raise ValueError(f"expected a (1, samples) waveform, got shape {waveform.shape}")
        samples = waveform[0]
        duration = samples.size / rate

        turns = speech_turns(samples, rate)
        _step(hook, "segmentation", file)
        wanted = speaker_count(len(turns), num_speakers, min_speakers, max_speakers)
        turns = split_until(turns, wanted)
        count = min(wanted, len(turns))
        _step(hook, "speaker_counting", file)

        annotation = Annotation(uri="model-free-test-double")
        for index, (start, stop) in enumerate(turns):
            segment = Segment(start * FRAME_SECONDS, min(stop * FRAME_SECONDS, duration))
            annotation[segment] = f"SPEAKER_{index % count:02d}"
        embeddings = np.eye(count, DIMENSION, dtype=np.float32)  # row i: SPEAKER_{i:02d}, labels() order
        if hook is not None:
            hook("embeddings", None, file=file, total=1, completed=1)
        _step(hook, "discrete_diarization", file)
        return Output(annotation, annotation.copy(), embeddings)


def speech_turns(samples: np.ndarray, rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """Runs of speech frames as ``(first frame, frame after the last)``, pauses shorter than MIN_PAUSE_SECONDS
    bridged. A partial last frame counts as a frame."""
    frame = int(FRAME_SECONDS * rate)
    frames = -(-samples.size // frame)
    if frames == 0:
        return []
    padded = np.zeros(frames * frame, dtype=np.float64)
    padded[: samples.size] = samples
    rms = np.sqrt(np.mean(padded.reshape(frames, frame) ** 2, axis=1))
    loudest = float(rms.max())
    if loudest == 0.0:
        return []
    speech = rms >= loudest * 10 ** (SPEECH_DB / 20)
    turns: list[tuple[int, int]] = []
    start: int | None = None
    for index, voiced in enumerate([*speech.tolist(), False]):
        if voiced and start is None:
            start = index
        elif not voiced and start is not None:
            turns.append((start, index))
            start = None
    bridge = round(MIN_PAUSE_SECONDS / FRAME_SECONDS)
    merged: list[tuple[int, int]] = []
    for turn in turns:
        if merged and turn[0] - merged[-1][1] < bridge:
            merged[-1] = (merged[-1][0], turn[1])
        else:
            merged.append(turn)
    return merged


def speaker_count(turns: int, num_speakers: int | None, min_speakers: int | None, max_speakers: int | None) -> int:
    """``num_speakers`` when given; otherwise DEFAULT_SPEAKERS (at most one per turn) within min/max."""
    if turns == 0:
        return 0
    if num_speakers is not None:
        return num_speakers
    count = min(DEFAULT_SPEAKERS, turns)
    if min_speakers is not None:
        count = max(count, min_speakers)
    if max_speakers is not None:
        count = min(count, max_speakers)
    return count


def split_until(turns: list[tuple[int, int]], count: int) -> list[tuple[int, int]]:
    """Halve the longest turn (the earliest of equals) until there are ``count`` turns, or none is two frames long:
    more speakers than turns still gives each speaker a turn."""
    turns = list(turns)
    while len(turns) < count:
        longest = max(range(len(turns)), key=lambda index: (turns[index][1] - turns[index][0], -index))
        start, stop = turns[longest]
        if stop - start < 2:
            break
        middle = (start + stop) // 2
        turns[longest : longest + 1] = [(start, middle), (middle, stop)]
    return turns


def _step(hook: Callable[..., Any] | None, name: str, file: Mapping[str, Any]) -> None:
    """pyannote's per-step hook call (no counts: the step is done); the artifacts are not pyannote's, so none."""
    if hook is not None:
        hook(name, None, file=file)


def model_free_diarizer(
    settings: Settings | None = None, *, name: str = NAME, revision: str | None = REVISION
) -> Diarizer:
    """A real :class:`Diarizer` whose pipeline is a :class:`LoudnessPipeline` (``diarizer.loaded.pipeline``).

    ``settings``: the limits the use cases read (``max_audio_seconds``, ``max_audio_bytes``,
    ``voiceprint_threshold`` ...); its ``model_dir`` is reported, never read. ``name``/``revision``: the model
    identity its results and voiceprints carry (another name plays another model, e.g. for a voiceprint mismatch).
    """
    settings = settings or Settings(model_dir=UNUSED_MODEL_DIR, device="cpu", num_threads=1)
    manifest = ModelManifest(name=name, revision=revision, trained=False, source=SOURCE)
    device = DeviceInfo(
        device="cpu",
        name="model-free test double (no model)",
        num_threads=settings.effective_threads,
        torch_version=_version("torch"),
        cuda_version=None,
        memory_bytes=None,
    )
    loaded = LoadedPipeline(
        pipeline=LoudnessPipeline(),
        model_dir=settings.model_dir,
        manifest=manifest,
        device=device,
        pyannote_version=_version("pyannote.audio"),
        load_seconds=0.0,
    )
    return Diarizer(loaded, settings)


def _version(distribution: str) -> str:
    """From the installed metadata: importing pyannote.audio or torch only for a version string costs seconds."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
