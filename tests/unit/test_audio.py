"""Decoding real files in every supported format, and every kind of bad input."""

from __future__ import annotations

import struct
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest

from diarization.core.audio import SAMPLE_RATE, decode_audio
from diarization.errors import (
    AudioTooLargeError,
    AudioTooLongError,
    EmptyAudioError,
    InputNotFoundError,
    InvalidAudioError,
    NoAudioStreamError,
)
from infra.media import FORMATS, encode, mp3_bytes, speech_like, write_float_wav

LIMITS = {"max_bytes": 100 * 1024**2, "max_seconds": 3600.0}


@pytest.mark.parametrize("extension", sorted(FORMATS))
def test_every_format_decodes_to_16k_mono_float32(
    extension: str, encoded_samples: dict[str, Path], sample_samples
) -> None:
    reference, _ = sample_samples
    audio = decode_audio(encoded_samples[extension], **LIMITS)
    _fmt, _codec, _, rate, channels = FORMATS[extension]
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.sample_rate == SAMPLE_RATE
    assert audio.facts.sample_rate == rate
    assert audio.facts.channels == channels
    assert audio.facts.size_bytes == encoded_samples[extension].stat().st_size
    # lossy codecs add priming delay and padding; the duration stays within 60 ms
    assert abs(audio.duration_seconds - 30.0) < 0.06
    # the content survives: same loudness as the original mono signal (downmix of identical channels)
    assert np.sqrt(np.mean(audio.samples**2)) == pytest.approx(np.sqrt(np.mean(reference**2)), rel=0.1)


def test_bytes_and_path_decode_identically(encoded_samples: dict[str, Path]) -> None:
    path = encoded_samples["flac"]
    from_path = decode_audio(path, **LIMITS)
    from_bytes = decode_audio(path.read_bytes(), **LIMITS)
    np.testing.assert_array_equal(from_path.samples, from_bytes.samples)


def test_lossless_decode_matches_the_original_samples(encoded_samples: dict[str, Path], sample_samples) -> None:
    reference, _ = sample_samples
    audio = decode_audio(encoded_samples["flac"], **LIMITS)  # 48 kHz flac, resampled back to 16 kHz
    n = min(len(reference), len(audio.samples))
    correlation = np.corrcoef(reference[:n], audio.samples[:n])[0, 1]
    assert correlation > 0.99


def test_unusual_rate_and_layout(tmp_path: Path) -> None:
    samples = speech_like(3.0, rate=16_000)
    path = encode(samples, 16_000, tmp_path / "odd.wav", "wav", "pcm_s16le", "s16", 11_025, 6)
    audio = decode_audio(path, **LIMITS)
    assert audio.facts.sample_rate == 11_025 and audio.facts.channels == 6
    assert abs(audio.duration_seconds - 3.0) < 0.01


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist") as caught:
        decode_audio(tmp_path / "nope.wav", **LIMITS)
    assert caught.value.code == "INPUT_NOT_FOUND"


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="directory"):
        decode_audio(tmp_path, **LIMITS)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(EmptyAudioError, match="0 bytes") as caught:
        decode_audio(path, **LIMITS)
    assert caught.value.code == "EMPTY_AUDIO"


def test_random_bytes_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(1).bytes(50_000))
    with pytest.raises(InvalidAudioError, match="not a readable audio file") as caught:
        decode_audio(path, **LIMITS)
    assert caught.value.code == "INVALID_AUDIO"


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp3"
    path.write_text("meeting notes, not audio\n" * 100)
    with pytest.raises(InvalidAudioError):
        decode_audio(path, **LIMITS)


def test_image_has_no_audio_stream(tmp_path: Path) -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 25 * 8))
        + chunk(b"IEND", b"")
    )
    path = tmp_path / "photo.m4a"
    path.write_bytes(png)
    with pytest.raises(NoAudioStreamError, match="no audio stream") as caught:
        decode_audio(path, **LIMITS)
    assert caught.value.code == "NO_AUDIO_STREAM"


@pytest.mark.parametrize("kept", [0.5, 0.9])
def test_truncated_mp3(tmp_path: Path, encoded_samples: dict[str, Path], kept: float) -> None:
    data = encoded_samples["mp3"].read_bytes()
    path = tmp_path / "cut.mp3"
    path.write_bytes(data[: int(len(data) * kept)])
    with pytest.raises(InvalidAudioError, match="truncated") as caught:
        decode_audio(path, **LIMITS)
    assert caught.value.details["declared_seconds"] == pytest.approx(30.0, abs=0.1)


def test_truncated_m4a_is_unreadable(tmp_path: Path, encoded_samples: dict[str, Path]) -> None:
    data = encoded_samples["m4a"].read_bytes()
    with pytest.raises(InvalidAudioError):
        decode_audio(data[: len(data) // 2], **LIMITS)


def test_header_only_wav_decodes_to_zero_samples(tmp_path: Path) -> None:
    path = tmp_path / "header-only.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16_000)
        handle.writeframes(b"")
    with pytest.raises(EmptyAudioError, match="0 samples"):
        decode_audio(path, **LIMITS)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path: Path, bad: float) -> None:
    samples = speech_like(2.0)
    samples[1234] = bad
    path = write_float_wav(samples, 16_000, tmp_path / "bad.wav")
    with pytest.raises(InvalidAudioError, match="non-finite") as caught:
        decode_audio(path, **LIMITS)
    assert caught.value.details["non_finite_samples"] >= 1


def test_too_large_is_rejected_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.wav"
    path.write_bytes(b"\x00" * 2048)  # not even valid audio: size is checked first
    with pytest.raises(AudioTooLargeError, match="MAX_AUDIO_BYTES") as caught:
        decode_audio(path, max_bytes=1024, max_seconds=3600)
    assert caught.value.code == "AUDIO_TOO_LARGE" and caught.value.http_status == 413


def test_too_long_is_rejected_from_the_declared_duration(encoded_samples: dict[str, Path]) -> None:
    with pytest.raises(AudioTooLongError, match="30.0 s long") as caught:
        decode_audio(encoded_samples["flac"], max_bytes=10**9, max_seconds=10)
    assert caught.value.code == "AUDIO_TOO_LONG"


def test_too_long_is_caught_while_decoding_when_the_header_lies() -> None:
    """3 s at 160 kb/s then 12 s at 8 kb/s: FFmpeg estimates ~3.7 s from the first bit rate."""
    glued = mp3_bytes(speech_like(3.0), 160_000) + mp3_bytes(speech_like(12.0, seed=1), 8_000)
    assert decode_audio(glued, max_bytes=10**9, max_seconds=60).duration_seconds > 15
    with pytest.raises(AudioTooLongError, match="decoding stopped"):
        decode_audio(glued, max_bytes=10**9, max_seconds=5)
