"""The bf16 proof: diarize real recordings in fp32 and bf16 and record whether they agree.

Model-making, not start-up: it runs when a directory is baked (``bake`` calls it) or by hand
(``python -m diarization.modelmaking.proof DIR``), and writes the ``precision.json`` that
:func:`diarization.core.precision.choose_precision` reads at start-up.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from diarization.core.precision import MIN_COSINE, PRECISION_FILE, Proof, write_proof


def prove(
    model_dir: Path,
    recordings: Iterable[Path],
    threads: int = 0,
    speakers: Mapping[str, int] | None = None,
    free: bool = True,
) -> Proof:
    """Diarize each recording in fp32 and bf16, free and with the speaker count forced; bf16 is proven only
    if every embedding agrees within :data:`MIN_COSINE` and every RTTM is identical.

    The forced count is ``speakers[recording name]`` where given, else what the free fp32 run found
    (at least 2). ``free=False`` (tests) checks only the forced runs.
    """
    import torch

    from diarization.core.config import Settings
    from diarization.core.fastpath import SharedTrunkDiarization
    from diarization.core.loader import load_pipeline

    pipeline = load_pipeline(
        Settings(model_dir=model_dir, device="cpu", num_threads=threads, embedding_precision="fp32")
    ).pipeline
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    if not isinstance(pipeline, SharedTrunkDiarization):
        return Proof(reason="the embedding model has no WeSpeaker ResNet trunk: fp32 only", created_at=now)
    checks: list[dict[str, Any]] = []
    try:
        for path in recordings:
            checks += _compare(pipeline, path, (speakers or {}).get(path.name), free)
    finally:
        pipeline.trunk_precision = "fp32"  # the pipeline is the process's cached one: leave it as loaded
    return _verdict(checks, now, torch.__version__)


def _compare(pipeline: Any, path: Path, count: int | None, free: bool) -> list[dict[str, Any]]:
    """One recording's checks: bf16 against fp32, free (if asked) and with the speaker count forced."""
    import torch

    from diarization.core.audio import decode_audio

    audio = decode_audio(path, max_bytes=2**31, max_seconds=3600)
    file = {"waveform": torch.from_numpy(audio.samples).unsqueeze(0), "sample_rate": audio.sample_rate}
    runs: list[tuple[dict[str, int], tuple[Any, Any]]] = []
    if free or count is None:
        reference = _run(pipeline, file, "fp32", {})
        count = count or max(2, len(reference[0].labels()))
        if free:
            runs.append(({}, reference))
    forced = {"num_speakers": count}
    runs.append((forced, _run(pipeline, file, "fp32", forced)))
    checks = []
    for hints, (annotation, embeddings) in runs:
        candidate, candidate_embeddings = _run(pipeline, file, "bf16", hints)
        checks.append(
            {
                "recording": path.name,
                "num_speakers": hints.get("num_speakers"),
                "min_cosine": round(min_cosine(embeddings, candidate_embeddings), 7),
                "rttm_identical": annotation.to_rttm() == candidate.to_rttm(),
                "turns": len(annotation),
            }
        )
    return checks


def _verdict(checks: list[dict[str, Any]], now: str, torch_version: str) -> Proof:
    """bf16 is proven only if every check agreed: cosine at least MIN_COSINE and the same RTTM."""
    if not checks:
        return Proof(reason="no recordings were given to compare fp32 and bf16 on", created_at=now)
    worst = min(check["min_cosine"] for check in checks)
    failed = [c for c in checks if c["min_cosine"] < MIN_COSINE or not c["rttm_identical"]]
    proven: tuple[str, ...] = ("fp32",) if failed else ("fp32", "bf16")
    reason = (
        f"bf16 disagreed with fp32 on {', '.join(sorted({c['recording'] for c in failed}))} "
        f"(needs cosine ≥ {MIN_COSINE} and identical RTTM)"
        if failed
        else f"bf16 gave identical RTTM and embedding cosine ≥ {worst:.6f} on {len(checks)} runs"
    )
    return Proof(
        proven=proven,
        reason=reason,
        checks=tuple(checks),
        min_cosine=worst,
        created_at=now,
        torch_version=torch_version,
    )


def _run(pipeline: Any, file: Mapping[str, Any], precision: str, hints: Mapping[str, Any]) -> tuple[Any, Any]:
    """One diarization with the trunk in ``precision``: (annotation, (chunk, speaker, dim) embeddings)."""
    captured: list[Any] = []

    def hook(step: str, artifact: Any, file: Any = None, total: Any = None, completed: Any = None) -> None:
        if step == "embeddings" and total is None:
            captured.append(artifact)

    pipeline.trunk_precision = precision
    output = pipeline(dict(file), hook=hook, **hints)
    return output.speaker_diarization, captured[0]


def min_cosine(reference: Any, candidate: Any) -> float:
    """Smallest cosine over the (chunk, speaker) embeddings both runs computed (inactive speakers are NaN)."""
    import numpy as np

    a = np.asarray(reference, dtype=np.float64).reshape(-1, reference.shape[-1])
    b = np.asarray(candidate, dtype=np.float64).reshape(-1, candidate.shape[-1])
    valid = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    if not valid.any():
        return 1.0
    a, b = a[valid], b[valid]
    cosines = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cosines.min())


def sample_recording() -> Path:
    """pyannote's own 30 s two-speaker recording, found by path (importing its module needs torchcodec)."""
    import importlib.util

    spec = importlib.util.find_spec("pyannote.audio")
    origin = spec.origin if spec is not None else None
    if origin is None:
        raise FileNotFoundError("pyannote.audio is not installed: its sample recording is needed")
    return Path(origin).parent / "sample" / "sample.wav"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diarization.modelmaking.proof", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "model_dir", type=Path, help=f"compare fp32 and bf16 on real speech; write DIR/{PRECISION_FILE}"
    )
    parser.add_argument(
        "--audio", type=Path, action="append", default=[], help="more recordings (WAV...); pyannote's sample always"
    )
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    from diarization.core.runtime import prepare_environment

    prepare_environment(offline=True)
    proof = prove(args.model_dir, [sample_recording(), *args.audio], threads=args.threads)
    write_proof(args.model_dir, proof)
    print(f"{args.model_dir}: proven {', '.join(proof.proven)}: {proof.reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
