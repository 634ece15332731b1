"""Audio decoding: any common container/codec to 16 kHz mono float32, with limits.

PyAV bundles FFmpeg in its wheel, so no system FFmpeg is needed (pyannote's own
torchcodec-based loader needs one). Limits are enforced as early as possible:
size before opening, declared duration before decoding, decoded duration while
decoding (metadata can lie), so an oversize upload never costs a full decode.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from diarization.core.result import AudioFacts
from diarization.errors import (
    AudioTooLargeError,
    AudioTooLongError,
    EmptyAudioError,
    InputNotFoundError,
    InvalidAudioError,
    NoAudioStreamError,
)

SAMPLE_RATE = 16_000
"""pyannote's segmentation and embedding models both expect 16 kHz."""

TRUNCATION_TOLERANCE_SECONDS = 1.0
"""Decoded audio this much shorter than the container declares is treated as truncated."""

AudioSource = str | Path | bytes

DeclaredCheck = Callable[[float], None]
"""Called with the duration the container declares, before any decoding; raises to stop (e.g. a time budget)."""


@dataclass(frozen=True)
class DecodedAudio:
    """16 kHz mono float32 samples plus the facts of the original file."""

    samples: np.ndarray
    facts: AudioFacts

    sample_rate: int = SAMPLE_RATE

    @property
    def duration_seconds(self) -> float:
        return len(self.samples) / self.sample_rate


def decode_audio(
    source: AudioSource, *, max_bytes: int, max_seconds: float, check_declared: DeclaredCheck | None = None
) -> DecodedAudio:
    """Decode ``source`` (a path or the file's bytes) to 16 kHz mono float32.

    Raises a :class:`~diarization.errors.DiarizationError` subclass for every bad input. ``check_declared`` sees
    the declared duration (when the container has one) after the MAX_AUDIO_SECONDS check, before decoding.
    """
    stream_in, size = _open_source(source)
    with stream_in:
        if size == 0:
            raise EmptyAudioError("The input is empty (0 bytes).", size_bytes=0)
        if size > max_bytes:
            raise AudioTooLargeError(
                f"The input is {size} bytes; the limit is {max_bytes} bytes (MAX_AUDIO_BYTES).",
                size_bytes=size,
                max_bytes=max_bytes,
            )
        return _decode(stream_in, size, max_seconds, check_declared)


def _open_source(source: AudioSource) -> tuple[BinaryIO, int]:
    """Open a path as a Python file object so FFmpeg never interprets it as a URL or protocol."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        return io.BytesIO(data), len(data)
    path = Path(source)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise InputNotFoundError(f"Audio file {str(path)!r} {what}.", path=str(path))
    return open(path, "rb"), os.path.getsize(path)


def _decode(file: BinaryIO, size: int, max_seconds: float, check_declared: DeclaredCheck | None) -> DecodedAudio:
    try:
        container = av.open(file, mode="r", metadata_errors="ignore")
    except av.FFmpegError as error:
        raise InvalidAudioError(
            f"The input is not a readable audio file ({_ffmpeg_reason(error)}).", size_bytes=size
        ) from error

    with container:
        if not container.streams.audio:
            kinds: list[str] = sorted({stream.type for stream in container.streams}) or ["none"]
            raise NoAudioStreamError(
                f"The input ({container.format.name}) has no audio stream (streams: {', '.join(kinds)}).",
                container=container.format.name,
            )
        stream = container.streams.audio[0]
        codec = stream.codec_context
        declared = _declared_duration(container, stream)
        if declared is not None and declared > max_seconds + TRUNCATION_TOLERANCE_SECONDS:
            raise AudioTooLongError(
                f"The audio is {declared:.1f} s long; the limit is {max_seconds:.0f} s (MAX_AUDIO_SECONDS).",
                duration_seconds=round(declared, 3),
                max_seconds=max_seconds,
            )
        if declared is not None and check_declared is not None:
            check_declared(declared)

        samples = _decode_stream(container, stream, max_seconds, size)
        facts = AudioFacts(
            duration_seconds=round(len(samples) / SAMPLE_RATE, 6),
            sample_rate=int(codec.sample_rate or 0),
            channels=int(codec.channels or 0),
            codec=codec.name,
            container=container.format.name,
            size_bytes=size,
        )

    if len(samples) == 0:
        raise EmptyAudioError("The audio stream decodes to 0 samples.", codec=facts.codec)
    if declared is not None and facts.duration_seconds < declared - max(TRUNCATION_TOLERANCE_SECONDS, 0.05 * declared):
        raise InvalidAudioError(
            f"The audio looks truncated: the file declares {declared:.2f} s but only "
            f"{facts.duration_seconds:.2f} s could be decoded.",
            declared_seconds=round(declared, 3),
            decoded_seconds=facts.duration_seconds,
        )
    finite = np.isfinite(samples)
    if not finite.all():
        bad = int(samples.size - np.count_nonzero(finite))
        raise InvalidAudioError(
            f"The audio contains {bad} non-finite samples (NaN or infinity).", non_finite_samples=bad
        )
    return DecodedAudio(samples=samples, facts=facts)


def _decode_stream(
    container: av.container.InputContainer, stream: av.AudioStream, max_seconds: float, size: int
) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    max_samples = int(max_seconds * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    decoded = 0
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1)
                decoded += chunk.size
                if decoded > max_samples:
                    raise AudioTooLongError(
                        f"The audio is longer than the limit of {max_seconds:.0f} s (MAX_AUDIO_SECONDS); "
                        "decoding stopped there.",
                        max_seconds=max_seconds,
                    )
                chunks.append(chunk)
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as error:
        raise InvalidAudioError(
            f"The audio stream is corrupt after {decoded / SAMPLE_RATE:.2f} s ({_ffmpeg_reason(error)}).",
            decoded_seconds=round(decoded / SAMPLE_RATE, 3),
            size_bytes=size,
        ) from error
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _declared_duration(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _ffmpeg_reason(error: av.FFmpegError) -> str:
    return error.strerror or type(error).__name__
