"""Which arithmetic the embedding trunk runs in, and the proof that a model directory may use it.

Why: the WeSpeaker ResNet trunk is ~97 % of the CPU time, and oneDNN runs its convolutions
~2.6× faster in bfloat16 on processors with native bf16 instructions (AVX512_BF16, AMX) — but
*slower* than fp32 where bf16 is emulated (older x86, Graviton2). So the choice depends on the
machine, detected at start-up, and on the weights: a directory may only use bf16 where
``precision.json`` records that bf16 gave the same diarization as fp32 on real recordings
(``python -m diarization.modelmaking.proof DIR``; ``bake`` runs it). Only the trunk changes
precision; pooling, PLDA and clustering stay fp32 (see :mod:`diarization.core.fastpath`).

:func:`choose_precision` is pure: tests feed it machines with and without native bf16.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from diarization.errors import ConfigurationError, PrecisionUnsupportedError

Precision = Literal["fp32", "bf16", "fp16"]
REQUESTS = ("auto", "fp32", "bf16", "fp16")
PRECISION_FILE = "precision.json"
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""/proc/cpuinfo flags of x86 processors whose bf16 dot products oneDNN runs in hardware."""

NO_PRECISION_PROOF = (
    "precision: {path} has no " + PRECISION_FILE + ", so EMBEDDING_PRECISION=auto runs it in fp32; "
    "`python -m diarization.modelmaking.proof {path}` compares bf16 with fp32 and records the verdict"
)
"""What generators print: they write no proof, so they must not look as if they had one."""

MIN_COSINE = 0.999
"""Smallest cosine between a (chunk, speaker) embedding in fp32 and in bf16 that still counts as agreement.

Measured first (2026-11-26, real segmentation-3.0 + WeSpeaker ResNet34 with random weights, pyannote's
sample and AMI tst00/dev00, free and forced counts): the worst pair was 0.999966 (cosine distance
3.4e-5), with identical RTTM in all six runs. bf16 keeps 8 significant bits (relative rounding up to
2^-9 ≈ 0.2 % per activation); statistics pooling averages hundreds of frames, so embeddings agree far
better than single values. 0.999 (distance 1e-3, an angle of 2.6°) leaves ~30× margin over that
measurement for other (trained) weights, and is still two orders of magnitude below the distances
clustering decides on (community-1's VBx threshold 0.6, the stand-in's centroid threshold 0.5).
Identical RTTM is required in addition: the cosine catches drift before it changes a turn."""


@dataclass(frozen=True)
class Machine:
    """What start-up detection saw: the input of :func:`choose_precision`."""

    cpu_flags: frozenset[str]
    """Flags from /proc/cpuinfo (x86) or Features (arm)."""
    cpu_capability: str
    """torch's ``torch.backends.cpu.get_cpu_capability()``: the widest vector kernels it dispatches."""
    onednn_bf16: bool
    """torch's own verdict: oneDNN has bf16 kernels for this CPU (true on AVX-512 even where emulated)."""
    cuda_bf16: bool = False


@dataclass(frozen=True)
class Proof:
    """What ``precision.json`` records: the precisions this directory's weights were shown to agree in."""

    proven: tuple[str, ...] = ("fp32",)
    reason: str = f"the directory has no {PRECISION_FILE}: bf16 was never compared with fp32 on its weights"
    checks: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    min_cosine: float | None = None
    created_at: str | None = None
    torch_version: str | None = None


@dataclass(frozen=True)
class Choice:
    precision: Precision
    reason: str


def native_bf16(machine: Machine) -> bool:
    """True where bf16 convolutions run in hardware: an x86 bf16 flag, AVX-512 kernels and oneDNN's bf16 path."""
    return (
        bool(machine.cpu_flags & NATIVE_BF16_FLAGS)
        and machine.cpu_capability.startswith("AVX512")
        and (machine.onednn_bf16)
    )


def choose_precision(requested: str, machine: Machine, device: str, proof: Proof, trunk: bool = True) -> Choice:
    """The trunk's precision for this request, machine, device and directory; raises for impossible requests."""
    if requested not in REQUESTS:
        raise ConfigurationError(
            f"EMBEDDING_PRECISION={requested!r} is not one of {', '.join(REQUESTS)}.", setting="EMBEDDING_PRECISION"
        )
    device = device.split(":")[0]  # torch names GPUs "cuda:0"; only the kind matters here
    if device == "cpu" and requested == "fp16":
        raise PrecisionUnsupportedError(
            "EMBEDDING_PRECISION=fp16 needs a GPU: CPUs have no fast fp16 convolutions. Use auto, fp32 or bf16 on CPU.",
            requested=requested,
            device=device,
        )
    if not trunk:
        return Choice("fp32", "the embedding model has no WeSpeaker ResNet trunk: it always runs in fp32")
    if requested == "fp32":
        return Choice("fp32", "EMBEDDING_PRECISION=fp32")
    if requested in ("bf16", "fp16"):
        note = "" if requested in proof.proven else f" (not proven on these weights: {proof.reason})"
        return Choice(requested, f"EMBEDDING_PRECISION={requested}{note}")  # type: ignore[arg-type]
    if "bf16" not in proof.proven:
        return Choice("fp32", f"auto: bf16 not proven for this directory ({proof.reason})")
    if device == "cuda":
        if machine.cuda_bf16:
            return Choice("bf16", "auto: the GPU has bf16 and the directory proved bf16")
        return Choice("fp32", "auto: this GPU has no bf16")
    if native_bf16(machine):
        return Choice("bf16", "auto: the CPU runs bf16 natively and the directory proved bf16")
    return Choice(
        "fp32",
        f"auto: the CPU has no native bf16 (needs one of {', '.join(sorted(NATIVE_BF16_FLAGS))}; "
        "emulated bf16 is slower than fp32)",
    )


def detect_machine() -> Machine:
    """The detection input for this process: /proc/cpuinfo flags and torch's reported capabilities."""
    import torch

    return Machine(
        cpu_flags=cpu_flags(_read_cpuinfo()),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        onednn_bf16=bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        cuda_bf16=bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
    )


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The first processor's ``flags`` (x86) or ``Features`` (arm) line, as a set."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags, so auto stays fp32
        return ""


def read_proof(model_dir: Path) -> Proof:
    """The directory's recorded proof; fp32 only where there is none or it cannot be read."""
    path = model_dir / PRECISION_FILE
    if not path.is_file():
        return Proof()
    try:
        data = json.loads(path.read_text())
        return Proof(
            proven=tuple(data["proven"]),
            reason=str(data["reason"]),
            checks=tuple(data.get("checks", ())),
            min_cosine=data.get("min_cosine"),
            created_at=data.get("created_at"),
            torch_version=data.get("torch_version"),
        )
    except (ValueError, KeyError, TypeError) as error:
        return Proof(reason=f"{PRECISION_FILE} is unreadable ({error}); prove the directory again")


def write_proof(model_dir: Path, proof: Proof) -> None:
    (model_dir / PRECISION_FILE).write_text(json.dumps(asdict(proof), indent=2) + "\n")
