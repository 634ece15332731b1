"""Settings read from environment variables, validated once at start-up.

Every variable is documented in README.md ("Configuration"). Validation collects
all problems at once so a user fixes a deployment in one round trip.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from diarization.errors import ConfigurationError

Device = Literal["auto", "cpu", "cuda"]
EmbeddingPrecision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

DEFAULT_MODEL_DIR = "/opt/diarization/model"
DEFAULT_MAX_AUDIO_SECONDS = 4 * 3600.0
DEFAULT_MAX_AUDIO_BYTES = 1024**3
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
DEFAULT_VOICEPRINT_THRESHOLD = 0.86
"""Measured with the real-weights stand-in (GE2E) on real speech (docs/VOICEPRINTS.md): a voice enrolled from one
part of pyannote's sample scored 0.888-0.933 in parts and files its enrollment never saw; the sample's other voice
scored up to 0.836 (same room and microphone), AMI strangers far less. Another embedding model needs its own value."""


@dataclass(frozen=True)
class Settings:
    """Runtime settings shared by every adapter."""

    model_dir: Path = Path(DEFAULT_MODEL_DIR)
    device: Device = "auto"
    num_threads: int = 0
    """Torch intra-op threads; 0 means one per CPU this process may use."""
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS
    max_audio_bytes: int = DEFAULT_MAX_AUDIO_BYTES
    embedding_batch_size: int | None = None
    """None keeps the value in the model's config.yaml."""
    segmentation_batch_size: int | None = None
    voiceprint_threshold: float = DEFAULT_VOICEPRINT_THRESHOLD
    """Cosine similarity at or above which a speaker takes a voiceprint's name (see diarization.core.voiceprints)."""
    fast_embeddings: bool = True
    """Use :mod:`diarization.core.fastpath` (same embeddings, a fraction of the work); False keeps pyannote's code."""
    embedding_precision: EmbeddingPrecision = "auto"
    """The embedding trunk's arithmetic; ``auto`` decides per machine and model (:mod:`diarization.core.precision`)."""

    @property
    def effective_threads(self) -> int:
        return self.num_threads or available_cpus()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read and validate settings; ``overrides`` (e.g. CLI flags) win over the environment."""
        env = os.environ if env is None else env
        problems: list[str] = []
        values: dict[str, object] = {}

        def text(name: str) -> str | None:
            raw = env.get(name)
            return raw.strip() if raw is not None and raw.strip() != "" else None

        model_dir = text("MODEL_DIR")
        if model_dir is not None:
            values["model_dir"] = Path(model_dir)

        device = text("DEVICE")
        if device is not None:
            if device.lower() not in ("auto", "cpu", "cuda"):
                problems.append(f"DEVICE={device!r} is not one of auto, cpu, cuda.")
            else:
                values["device"] = device.lower()

        for name, attr, minimum in (
            ("NUM_THREADS", "num_threads", 0),
            ("MAX_AUDIO_BYTES", "max_audio_bytes", 1),
            ("EMBEDDING_BATCH_SIZE", "embedding_batch_size", 1),
            ("SEGMENTATION_BATCH_SIZE", "segmentation_batch_size", 1),
        ):
            raw = text(name)
            if raw is None:
                continue
            try:
                number = int(raw)
            except ValueError:
                problems.append(f"{name}={raw!r} is not a whole number; set e.g. {name}={max(minimum, 1)}.")
                continue
            if number < minimum:
                problems.append(f"{name}={number} must be at least {minimum}.")
            else:
                values[attr] = number

        fast = text("FAST_EMBEDDINGS")
        if fast is not None:
            if fast.lower() in TRUE_WORDS:
                values["fast_embeddings"] = True
            elif fast.lower() in FALSE_WORDS:
                values["fast_embeddings"] = False
            else:
                problems.append(f"FAST_EMBEDDINGS={fast!r} is not true or false.")

        precision = text("EMBEDDING_PRECISION")
        if precision is not None:
            if precision.lower() not in PRECISIONS:
                problems.append(f"EMBEDDING_PRECISION={precision!r} is not one of {', '.join(PRECISIONS)}.")
            else:
                values["embedding_precision"] = precision.lower()

        raw_seconds = text("MAX_AUDIO_SECONDS")
        if raw_seconds is not None:
            try:
                seconds = float(raw_seconds)
            except ValueError:
                problems.append(
                    f"MAX_AUDIO_SECONDS={raw_seconds!r} is not a number of seconds; set e.g. MAX_AUDIO_SECONDS=3600."
                )
            else:
                if not seconds > 0 or seconds == float("inf"):
                    problems.append(f"MAX_AUDIO_SECONDS={raw_seconds} must be a positive, finite number of seconds.")
                else:
                    values["max_audio_seconds"] = seconds

        raw_threshold = text("VOICEPRINT_THRESHOLD")
        if raw_threshold is not None:
            try:
                threshold = float(raw_threshold)
            except ValueError:
                threshold = float("nan")
            if not -1.0 <= threshold < 1.0:
                problems.append(f"VOICEPRINT_THRESHOLD={raw_threshold!r} must be a cosine similarity in [-1, 1).")
            else:
                values["voiceprint_threshold"] = threshold

        if problems:
            raise ConfigurationError(
                "Invalid configuration: " + " ".join(problems) + " See README.md, section Configuration.",
                problems=problems,
            )
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]


def available_cpus() -> int:
    """CPUs this process may run on (respects cgroup/affinity limits, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
