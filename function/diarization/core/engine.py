"""The core: audio in, :class:`DiarizationResult` out. No AWS here; adapters wrap this.

Decoding and diarization are separate calls so an adapter can look at the
decoded duration (e.g. Lambda's deadline guard) before paying for diarization.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from diarization.core.audio import AudioSource, DeclaredCheck, DecodedAudio, decode_audio
from diarization.core.config import Settings
from diarization.core.hints import SpeakerHints
from diarization.core.loader import LoadedPipeline, load_pipeline
from diarization.core.result import (
    STAND_IN_WARNING,
    UNTRAINED_WARNING,
    AudioFacts,
    DiarizationResult,
    ModelInfo,
    Segment,
    Timings,
)
from diarization.core.voiceprints import EmbeddingModel, Voiceprint, check_compatible, check_name, enroll, identify

SILENCE_PEAK = 10 ** (-80 / 20)
"""Digital silence (peak below -80 dBFS) has no speakers; skipping the pipeline saves its full cost."""

SILENCE_WARNING = "The audio is silent (peak below -80 dBFS): no speech to diarize."

PipelineHook = Callable[..., Any]
"""pyannote's hook protocol: ``hook(step_name, artifact, file=None, total=None, completed=None)``."""

PipelineRun = Callable[[dict[str, int]], Any]
"""Computes pyannote's ``DiarizeOutput`` given the pipeline's speaker-count keyword arguments."""


@dataclass(frozen=True)
class Prepared:
    """What a result says about its audio, without the samples (a fan-out reduce never holds them)."""

    facts: AudioFacts
    duration_seconds: float
    """Of the decoded 16 kHz samples: the real-time factor's denominator and where turns are clipped."""
    peak: float
    """Largest absolute sample (:func:`peak_of`): below :data:`SILENCE_PEAK` nothing is run."""


def peak_of(samples: np.ndarray) -> float:
    """max |sample| without a temporary array the size of the audio (hours of it are gigabytes)."""
    if samples.size == 0:
        return 0.0
    return float(max(samples.max(), -samples.min()))


def decode_within_limits(
    settings: Settings, source: AudioSource, check_declared: DeclaredCheck | None = None
) -> tuple[DecodedAudio, float]:
    """Decode within the deployment's size and duration limits (and the caller's `check_declared`, which sees the
    declared duration before decoding); returns (audio, seconds taken)."""
    started = time.perf_counter()
    audio = decode_audio(
        source,
        max_bytes=settings.max_audio_bytes,
        max_seconds=settings.max_audio_seconds,
        check_declared=check_declared,
    )
    return audio, time.perf_counter() - started


class Diarizer:
    """A loaded pipeline plus the limits it enforces; one per process."""

    def __init__(self, loaded: LoadedPipeline, settings: Settings) -> None:
        self.loaded = loaded
        self.settings = settings
        self._run_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Diarizer:
        return cls(load_pipeline(settings), settings)

    def diarize(
        self, source: AudioSource, hints: SpeakerHints | None = None, input_uri: str | None = None
    ) -> DiarizationResult:
        """Decode and diarize ``source`` (a path or bytes)."""
        hints = hints or SpeakerHints()
        audio, decode_seconds = decode_within_limits(self.settings, source)
        uri = input_uri or (str(source) if not isinstance(source, bytes | bytearray | memoryview) else "upload")
        return self.diarize_decoded(audio, hints, uri, decode_seconds)

    def diarize_decoded(
        self,
        audio: DecodedAudio,
        hints: SpeakerHints,
        input_uri: str,
        decode_seconds: float = 0.0,
        voiceprints: Sequence[Voiceprint] = (),
        include_embeddings: bool = False,
        hook: PipelineHook | None = None,
    ) -> DiarizationResult:
        """Diarize, then name the speakers that match ``voiceprints`` (refused up front if another model made
        them, so a mismatch costs no diarization). ``hook`` is pyannote's pipeline hook (e.g. the CLI's progress
        display): called per step and batch."""
        import torch

        started = time.perf_counter()
        waveform = {"waveform": torch.from_numpy(audio.samples).unsqueeze(0), "sample_rate": audio.sample_rate}
        return self.diarize_with(
            lambda pipeline_hints: self.loaded.pipeline(waveform, hook=hook, **pipeline_hints),
            Prepared(audio.facts, audio.duration_seconds, peak_of(audio.samples)),
            hints,
            input_uri,
            started=started,
            decode_seconds=decode_seconds,
            voiceprints=voiceprints,
            include_embeddings=include_embeddings,
        )

    def diarize_with(
        self,
        run: PipelineRun,
        prepared: Prepared,
        hints: SpeakerHints,
        input_uri: str,
        *,
        started: float,
        decode_seconds: float = 0.0,
        voiceprints: Sequence[Voiceprint] = (),
        include_embeddings: bool = False,
    ) -> DiarizationResult:
        """The one way a result is made, whichever way pyannote's output was computed (one process: the whole
        pipeline; fan-out: clustering over precomputed shards): warnings, the silence rule, model info, segments,
        centroids, timings and identification. ``run(pipeline_kwargs)`` returns pyannote's ``DiarizeOutput``; it is
        not called for silent audio. ``started`` is the ``time.perf_counter()`` the diarize time counts from."""
        if voiceprints:
            check_compatible(voiceprints, self.embedding_model())
        warnings: list[str] = []
        if not self.loaded.manifest.trained:
            warnings.append(UNTRAINED_WARNING)
        elif self.loaded.manifest.stand_in:
            warnings.append(STAND_IN_WARNING)
        if prepared.peak < SILENCE_PEAK:
            segments: list[Segment] = []
            exclusive: list[Segment] = []
            embeddings: dict[str, tuple[float, ...]] = {}
            warnings.append(SILENCE_WARNING)
        else:
            segments, exclusive, embeddings = self._run_pipeline(run, hints, prepared.duration_seconds)
        diarize_seconds = time.perf_counter() - started
        total = decode_seconds + diarize_seconds
        result = DiarizationResult(
            input_uri=input_uri,
            audio=prepared.facts,
            parameters=hints.to_dict(),
            segments=segments,
            exclusive_segments=exclusive,
            model=self.model_info(),
            timings=Timings(
                decode_seconds=round(decode_seconds, 3),
                diarize_seconds=round(diarize_seconds, 3),
                total_seconds=round(total, 3),
                real_time_factor=round(total / prepared.duration_seconds, 4),
            ),
            warnings=warnings,
            speaker_embeddings=embeddings,
            include_embeddings=include_embeddings,
        )
        return self._identify(result, voiceprints) if voiceprints else result

    def _identify(self, result: DiarizationResult, voiceprints: Sequence[Voiceprint]) -> DiarizationResult:
        """The result with the speakers that match a voiceprint named, and what was matched against."""
        embeddings = result.speaker_embeddings
        spoken = {speaker.id: embeddings[speaker.id] for speaker in result.speakers if speaker.id in embeddings}
        return dataclasses.replace(
            result,
            identities=identify(spoken, voiceprints, self.embedding_model(), self.settings.voiceprint_threshold),
            identification={
                "threshold": self.settings.voiceprint_threshold,
                "voiceprints": [voiceprint.name for voiceprint in voiceprints],
            },
        )

    def enroll_decoded(
        self, audio: DecodedAudio, name: str, input_uri: str, decode_seconds: float = 0.0
    ) -> tuple[Voiceprint, DiarizationResult]:
        """A voiceprint named ``name`` from the sample's dominant speaker, and the sample's diarization."""
        check_name(name)
        result = self.diarize_decoded(audio, SpeakerHints(), input_uri, decode_seconds)
        speaking = {speaker.id: speaker.speaking_seconds for speaker in result.speakers}
        return enroll(name, self.embedding_model(), speaking, result.speaker_embeddings), result

    def embedding_model(self) -> EmbeddingModel:
        """The space this pipeline's speaker embeddings (and so its voiceprints) live in."""
        manifest = self.loaded.manifest
        return EmbeddingModel(manifest.name, manifest.revision, int(self.loaded.pipeline._embedding.dimension))

    def model_info(self) -> ModelInfo:
        loaded = self.loaded
        return ModelInfo(
            name=loaded.manifest.name,
            revision=loaded.manifest.revision,
            trained=loaded.manifest.trained,
            pyannote_version=loaded.pyannote_version,
            torch_version=loaded.device.torch_version,
            cuda_version=loaded.device.cuda_version,
            device=loaded.device.device,
            device_name=loaded.device.name,
            num_threads=loaded.device.num_threads,
            stand_in=loaded.manifest.stand_in,
            embedding_precision=loaded.embedding_precision,
        )

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """One pipeline call at a time (torch already uses every thread, concurrent calls only oversubscribe),
        without autograd's bookkeeping."""
        import torch

        with self._run_lock, torch.inference_mode():
            yield

    def _run_pipeline(
        self, run: PipelineRun, hints: SpeakerHints, duration: float
    ) -> tuple[list[Segment], list[Segment], dict[str, tuple[float, ...]]]:
        with self.running():
            output = run(hints.as_pipeline_kwargs())
        return (
            _segments(output.speaker_diarization, duration),
            _segments(output.exclusive_speaker_diarization, duration),
            _centroids(output.speaker_diarization, output.speaker_embeddings),
        )


def _centroids(annotation: Any, embeddings: Any) -> dict[str, tuple[float, ...]]:
    """pyannote's per-speaker centroids by label: one row per label of ``annotation.labels()`` (sorted); None with
    oracle clustering, and zero rows for speakers clustering found no centroid for."""
    if embeddings is None:
        return {}
    rows = zip(annotation.labels(), embeddings, strict=True)
    return {str(label): tuple(float(value) for value in row) for label, row in rows}


def _segments(annotation: Any, duration: float) -> list[Segment]:
    """Turns in time order, clipped to the audio (pyannote's frame grid can overshoot the end)."""
    segments = []
    for turn, _, label in annotation.itertracks(yield_label=True):
        start, end = round(max(0.0, turn.start), 3), round(min(duration, turn.end), 3)
        if end > start:
            segments.append(Segment(start=start, end=end, speaker=str(label)))
    return segments
