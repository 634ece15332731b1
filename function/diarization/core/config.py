"""Settings read from environment variables, validated once at start-up.

Every variable is described in ``SETTINGS_TABLE`` (read by :func:`diarization.core.environment.read`, shown in
docs/configuration.md). Validation collects all problems at once so a user fixes a deployment in one round trip.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from diarization.core.environment import Kind, Table, Variable, read

Device = Literal["auto", "cpu", "cuda"]
EmbeddingPrecision = Literal["auto", "fp32", "bf16", "fp16"]
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

DEFAULT_MODEL_DIR = "/opt/diarization/model"
DEFAULT_MAX_AUDIO_SECONDS = 4 * 3600.0
DEFAULT_MAX_AUDIO_BYTES = 1024**3
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
        values, problems = read(SETTINGS_TABLE, os.environ if env is None else env)
        if problems:
            raise SETTINGS_TABLE.error(problems)
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)  # type: ignore[arg-type]


SETTINGS_TABLE = Table(
    title="core settings",
    see="docs/configuration.md",
    variables=(
        Variable(
            "MODEL_DIR",
            "model_dir",
            Kind.PATH,
            f"`{DEFAULT_MODEL_DIR}`",
            "Pipeline directory (see [Models](models.md#models)). `--model-dir` overrides it.",
        ),
        Variable(
            "DEVICE",
            "device",
            Kind.CHOICE,
            "`auto`",
            "`auto` (CUDA when available, else CPU), `cpu`, or `cuda` (fails with `DEVICE_UNAVAILABLE` if there is "
            "no GPU).",
            choices=DEVICES,
        ),
        Variable(
            "NUM_THREADS",
            "num_threads",
            Kind.WHOLE,
            "`0`",
            "Torch CPU threads; `0` means one per CPU this process may use (cgroup/affinity aware).",
            minimum=0,
        ),
        Variable(
            "MAX_AUDIO_SECONDS",
            "max_audio_seconds",
            Kind.NUMBER,
            "`14400` (4 h)",
            "Longer audio is rejected with `AUDIO_TOO_LONG` before diarization (from the header, and again while "
            "decoding in case the header lies).",
            above=0,
            example="3600",
        ),
        Variable(
            "MAX_AUDIO_BYTES",
            "max_audio_bytes",
            Kind.WHOLE,
            "`1073741824` (1 GiB)",
            "Larger inputs are rejected with `AUDIO_TOO_LARGE` before they are opened.",
            minimum=1,
        ),
        Variable(
            "FAST_EMBEDDINGS",
            "fast_embeddings",
            Kind.FLAG,
            "`true`",
            "The [fast embedding path](speed.md#performance-the-fast-cpu-path): same embeddings and RTTM as "
            "pyannote, a third of the work. `false` runs pyannote's own code.",
        ),
        Variable(
            "EMBEDDING_PRECISION",
            "embedding_precision",
            Kind.CHOICE,
            "`auto`",
            "Arithmetic of the embedding network's ResNet trunk (pooling, PLDA and clustering stay fp32): `auto`, "
            "`fp32`, `bf16`, or `fp16` (GPU only; `PRECISION_UNSUPPORTED` on CPU). `auto` picks bf16 only where the "
            "processor runs it natively (x86 `avx512_bf16`/`amx_bf16` in `/proc/cpuinfo`, AVX-512 kernels and oneDNN "
            "bf16 in torch; on a GPU, `torch.cuda.is_bf16_supported()`) **and** the model directory's "
            "`precision.json` proves bf16 agrees with fp32 (see [bf16](speed.md#bf16-where-the-processor-has-it)); "
            "else fp32. The choice and its reason are logged at start-up and reported as "
            "`model.embedding_precision`. An explicit `bf16` is honoured even where unproven (the log says so).",
            choices=PRECISIONS,
        ),
        Variable(
            "EMBEDDING_BATCH_SIZE",
            "embedding_batch_size",
            Kind.WHOLE,
            "CPU with the fast path: `1`; otherwise from the model's `config.yaml`",
            "Speaker-embedding batch size. With the fast path it counts 10 s chunks (each carrying all its "
            "speakers), not (chunk, speaker) pairs; on CPU larger batches were no faster and cost ~40 MB each.",
            minimum=1,
        ),
        Variable(
            "VOICEPRINT_THRESHOLD",
            "voiceprint_threshold",
            Kind.NUMBER,
            f"`{DEFAULT_VOICEPRINT_THRESHOLD}`",
            "Cosine similarity at or above which a speaker takes a voiceprint's name (see "
            "[Voiceprints](cli.md#voiceprints)); in [−1, 1).",
            minimum=-1,
            below=1,
        ),
        Variable(
            "SEGMENTATION_BATCH_SIZE",
            "segmentation_batch_size",
            Kind.WHOLE,
            "CPU with the fast path: `4`; otherwise from the model's `config.yaml`",
            "Segmentation batch size. On CPU 4 was as fast as 32 and peaked 330 MB lower.",
            minimum=1,
        ),
    ),
)
"""Every variable ``Settings.from_env`` reads, in the order docs/configuration.md lists them."""


def available_cpus() -> int:
    """CPUs this process may run on (respects cgroup/affinity limits, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
