"""Diarize now and answer with the result: the API's POST /diarize and the SageMaker server's /invocations.

No outputs are written and no job is involved; the caller gets the result document (or a typed error).
"""

from __future__ import annotations

import dataclasses
import tempfile
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from diarization.core.audio import AudioSource, DecodedAudio
from diarization.core.capacity import MemoryBudget
from diarization.core.engine import Diarizer, decode_within_limits
from diarization.core.hints import SpeakerHints
from diarization.core.result import DiarizationResult
from diarization.core.voiceprints import Voiceprint
from diarization.errors import AudioTooLargeError, AudioTooLongError, ConfigurationError, TooLongForSyncError
from diarization.service.diarize_object import FIXED_OVERHEAD_SECONDS, SpeedEstimate
from diarization.service.locations import ObjectRef
from diarization.service.ports import ObjectStore


@dataclass(frozen=True)
class SyncRequest:
    source: bytes | ObjectRef
    hints: SpeakerHints
    name: str = "upload"
    """The input's name in the result (an object's URI, or the uploaded file's name)."""
    voiceprints: tuple[Voiceprint, ...] = ()
    include_embeddings: bool = False


@dataclass(frozen=True)
class SyncBudget:
    """For callers that wait with a deadline (API Gateway stops at 30 s)."""

    seconds: float
    max_object_bytes: int


class DiarizeSync:
    def __init__(
        self,
        diarizer: Diarizer,
        store: ObjectStore | None,
        workdir: Path | None = None,
        budget: SyncBudget | None = None,
        speed: SpeedEstimate | None = None,
        memory: MemoryBudget | None = None,
    ) -> None:
        self.diarizer = diarizer
        self.store = store
        self.workdir = workdir
        self.budget = budget
        self.speed = speed
        self.memory = memory

    def __call__(self, request: SyncRequest, gate: AbstractContextManager[object] | None = None) -> DiarizationResult:
        """`gate` wraps the decode and the diarization (the server's concurrency slot)."""
        settings = self.diarizer.settings
        if isinstance(request.source, ObjectRef):
            if self.store is None:
                raise ConfigurationError("No object store: s3_uri inputs are not available here.")
            ref = request.source
            size, exact = self.store.head(ref)
            if self.budget is not None and size > self.budget.max_object_bytes:
                raise TooLongForSyncError(
                    f"{ref.uri} is {size} bytes: too large for a synchronous answer; use POST /jobs."
                )
            if size > settings.max_audio_bytes:
                raise AudioTooLargeError(f"{ref.uri} is {size} bytes; the limit is {settings.max_audio_bytes}.")
            with gate or nullcontext(), tempfile.TemporaryDirectory(dir=self.workdir) as scratch:
                local = Path(scratch) / "input"
                self.store.download(exact, local)
                audio, decode_seconds = self._decode(local)
                self._check_decoded(audio.duration_seconds)
                return self._diarize(request, audio, ref.uri, decode_seconds)
        with gate or nullcontext():
            audio, decode_seconds = self._decode(request.source)
            self._check_decoded(audio.duration_seconds)
            return self._diarize(request, audio, request.name, decode_seconds)

    def _diarize(
        self, request: SyncRequest, audio: DecodedAudio, name: str, decode_seconds: float
    ) -> DiarizationResult:
        return self.diarizer.diarize_decoded(
            audio, request.hints, name, decode_seconds, request.voiceprints, request.include_embeddings
        )

    def _decode(self, source: AudioSource) -> tuple[DecodedAudio, float]:
        """Within the deployment's limits and, with a time budget, never past the longest audio the budget can take:
        a file without a declared duration (or one that understates it) stops decoding there, instead of decoding up
        to MAX_AUDIO_SECONDS (hours: a minute of decoding) before the check after decoding refuses it."""
        settings = self.diarizer.settings
        longest = self._longest_seconds()
        if longest is None or longest >= settings.max_audio_seconds:
            return decode_within_limits(settings, source, self._check_declared)
        try:
            return decode_within_limits(
                dataclasses.replace(settings, max_audio_seconds=longest), source, self._check_declared
            )
        except AudioTooLongError as error:
            declared = error.details.get("duration_seconds")
            if isinstance(declared, int | float):  # the header said so: the same answer as _check_declared gives
                self._check_declared(float(declared))
            raise TooLongForSyncError(
                f"The audio is longer than the {longest:.0f} s a synchronous request can diarize in "
                f"{self._budget_seconds():.0f} s; decoding stopped there. Use POST /jobs.",
                decoding_stopped_at_seconds=round(longest, 3),
            ) from error

    def _longest_seconds(self) -> float | None:
        """The longest audio whose estimate fits the budget (None: no budget)."""
        if self.budget is None or self.speed is None:
            return None
        return max(0.0, self.budget.seconds - FIXED_OVERHEAD_SECONDS) / self.speed.real_time_factor

    def _budget_seconds(self) -> float:
        return self.budget.seconds if self.budget is not None else 0.0

    def _check_declared(self, declared_seconds: float) -> None:
        """From the container's header, before decoding: a 4 h file is refused in milliseconds, not after a minute
        of decoding and a gigabyte of samples. The check after decoding stays, for headers that understate."""
        self._check_time(declared_seconds, "declared_seconds", "The file declares {seconds:.0f} s of audio, which")

    def _check_decoded(self, audio_seconds: float) -> None:
        """After decoding: the decoded length, whatever the header said, against the time budget and the memory
        clustering it would need (the GPU endpoint's host memory: AUDIO_TOO_LONG_FOR_MEMORY, not a killed worker)."""
        if self.memory is not None:
            self.memory.check(audio_seconds)
        self._check_time(audio_seconds, "audio_seconds", "{seconds:.0f} s of audio")

    def _check_time(self, seconds: float, detail: str, subject: str) -> None:
        if self.budget is None or self.speed is None:
            return
        needed = self.speed.seconds_for(seconds)
        if needed > self.budget.seconds:
            raise TooLongForSyncError(
                f"{subject.format(seconds=seconds)} needs about {needed:.0f} s, more than the "
                f"{self.budget.seconds:.0f} s a synchronous request may take; use POST /jobs.",
                **{detail: round(seconds, 3)},
                estimated_seconds=round(needed, 1),
            )
