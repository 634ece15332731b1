"""Real media files for the tests and the local seeding, encoded with PyAV (FFmpeg) from real or generated samples."""

from __future__ import annotations

import importlib.util
import io
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# (extension, container format, codec, sample format, sample rate, channels)
FORMATS: dict[str, tuple[str, str, str, int, int]] = {
    "wav": ("wav", "pcm_s16le", "s16", 44_100, 2),
    "flac": ("flac", "flac", "s16", 48_000, 1),
    "mp3": ("mp3", "libmp3lame", "fltp", 44_100, 2),
    "m4a": ("ipod", "aac", "fltp", 22_050, 2),
    "aac": ("adts", "aac", "fltp", 32_000, 1),
    "ogg": ("ogg", "libopus", "flt", 48_000, 2),
    "opus": ("opus", "libopus", "flt", 48_000, 1),
    "webm": ("webm", "libopus", "flt", 48_000, 6),
}


def sample_wav() -> Path:
    """pyannote's own 30 s two-speaker recording (found by path: importing its module decodes it)."""
    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyannote.audio is not installed: run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "sample" / "sample.wav"


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(samples as float32 mono, sample rate) of a 16-bit PCM wav."""
    with wave.open(str(path)) as handle:
        rate = handle.getframerate()
        data = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
        data = data.reshape(-1, handle.getnchannels()).mean(axis=1)
    return (data / 32768.0).astype(np.float32), rate


def encode(
    samples: np.ndarray, rate: int, path: Path, fmt: str, codec: str, sample_format: str, out_rate: int, channels: int
) -> Path:
    """Encode mono float samples into ``path``, resampled to ``out_rate`` and copied to ``channels``."""
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=out_rate, layout=layout)
        resampler = av.AudioResampler(format=sample_format, layout=layout, rate=out_rate)
        block = 4096
        for start in range(0, len(samples), block):
            piece = samples[start : start + block].astype(np.float32)
            frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    container.mux(packet)
        for converted in resampler.resample(None):
            for packet in stream.encode(converted):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def encode_as(samples: np.ndarray, rate: int, directory: Path, extension: str, stem: str = "audio") -> Path:
    fmt, codec, sample_format, out_rate, channels = FORMATS[extension]
    return encode(samples, rate, directory / f"{stem}.{extension}", fmt, codec, sample_format, out_rate, channels)


def write_float_wav(samples: np.ndarray, rate: int, path: Path) -> Path:
    """A 32-bit float wav, the one common format that can carry NaN and infinity."""
    return encode(samples, rate, path, "wav", "pcm_f32le", "flt", rate, 1)


def speech_like(seconds: float, rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """Voiced, syllable-rate modulated harmonics: not speech, but not silence or white noise either."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) * (rng.random() * 0.2 + 0.3)
    return (0.3 * voice * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def mp3_bytes(samples: np.ndarray, bit_rate: int, rate: int = 16_000) -> bytes:
    """A constant-bit-rate MP3 without its ID3 tag, so that several can be glued into one stream."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="mono")
        stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    data = buffer.getvalue()
    if data[:3] == b"ID3":
        tag_size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        data = data[10 + tag_size :]
    return data


def flac_declaring(seconds: float, declared_seconds: float, rate: int = 16_000) -> bytes:
    """A real FLAC file of `seconds` whose STREAMINFO claims `declared_seconds`: what FFmpeg reports as its duration
    before decoding (it trusts the header), while a full decode finds it truncated."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(speech_like(seconds, rate).reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(converted):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = bytearray(buffer.getvalue())
    # "fLaC", a 4-byte block header, then STREAMINFO; its bytes 10-17 end with the 36-bit total sample count.
    start = 4 + 4 + 10
    packed = int.from_bytes(data[start : start + 8], "big")
    packed = (packed & ~((1 << 36) - 1)) | int(declared_seconds * rate)
    data[start : start + 8] = packed.to_bytes(8, "big")
    return bytes(data)
