"""Where long audio goes, the policy in one place (docs/long-audio.md): this function, the GPU endpoint or the fan-out.

The routes themselves carry out what is decided here: the GPU endpoint's port only submits
(``diarization.service.ports.GpuRouter``), and the fan-out stages and starts (``diarization.service.fanout``).
Each rule answers with its reason (None: the rule does not apply), which the ``routed`` outcome shows.

With both routes deployed the fan-out takes what it is asked to (the file does not fit the invocation, or
FANOUT=always) unless LONG_AUDIO_ROUTE=gpu; with one deployed, that one; with neither, the object use case's
deadline check refuses what does not fit. A file too large for this function's memory goes to the GPU (the fan-out's
reduce would need that memory too), else is AUDIO_TOO_LONG_FOR_MEMORY.
"""

from __future__ import annotations

from dataclasses import dataclass

from diarization.core.audio import DecodedAudio
from diarization.core.capacity import MemoryBudget
from diarization.core.engine import SILENCE_PEAK, peak_of
from diarization.errors import AudioTooLongForMemoryError

DEFAULT_GPU_THRESHOLD_SECONDS = 1800.0
"""GPU_THRESHOLD_SECONDS: audio longer than this goes to the GPU endpoint, where there is one."""
GPU, FANOUT = "gpu", "fanout"


@dataclass(frozen=True)
class LongAudioRoute:
    """The decision: which route (GPU or FANOUT) and why."""

    route: str
    reason: str


def gpu_reason(
    audio_seconds: float, estimated_seconds: float, available_seconds: float | None, threshold_seconds: float
) -> str | None:
    """Why this file should go to the GPU endpoint (None: Lambda takes it). `available_seconds` is after the margin."""
    if audio_seconds > threshold_seconds:
        return f"{audio_seconds:.0f} s of audio is above GPU_THRESHOLD_SECONDS={threshold_seconds:.0f}"
    if available_seconds is not None and estimated_seconds > available_seconds:
        return f"about {estimated_seconds:.0f} s of work does not fit the {available_seconds:.0f} s left"
    return None


def fanout_reason(mode: str, audio: DecodedAudio, needed: float, available: float | None) -> str | None:
    """Why this file fans out (None: it does not); `mode` is FANOUT. Silence never does: the single path skips the
    pipeline for it, whatever its length."""
    if mode == "never" or peak_of(audio.samples) < SILENCE_PEAK:
        return None
    if mode == "always":
        return "FANOUT=always"
    if available is not None and needed > available:
        return f"about {needed:.0f} s of work does not fit the {available:.0f} s left"
    return None


def memory_reason(memory: MemoryBudget | None, audio_seconds: float, gpu_deployed: bool) -> str | None:
    """Why a file that would not fit this host's memory goes to the GPU (more memory there); without a GPU endpoint,
    AUDIO_TOO_LONG_FOR_MEMORY is raised (an error object now, instead of an out-of-memory kill later)."""
    if memory is None:
        return None
    try:
        memory.check(audio_seconds)
    except AudioTooLongForMemoryError as error:
        if not gpu_deployed:
            raise
        return f"clustering would not fit in this function's memory: {error.message}"
    return None


def choose(gpu: str | None, fan: str | None, prefer_gpu: bool) -> LongAudioRoute | None:
    """Between the GPU's and the fan-out's reasons (None where that route is not deployed or not wanted), the route
    taken; None: this function diarizes the file. `prefer_gpu`: LONG_AUDIO_ROUTE=gpu."""
    if fan and not (gpu and prefer_gpu):
        return LongAudioRoute(FANOUT, fan)
    if gpu:
        return LongAudioRoute(GPU, gpu)
    return None
