"""``make bench-int8``: an int8 (VNNI) embedding trunk put through bf16's agreement test (issue 14, item 5).

The trunk is the fast path's (batch norms folded, channels-last), quantized with PyTorch's FX graph mode static
quantization (``torch.ao``, the ``x86`` backend: fbgemm/oneDNN kernels that use AVX512_VNNI where the CPU has it),
calibrated on 10 s chunks of AMI *training* excerpts (trn01–trn03 from pyannote.audio's sdist), which are never
scored. The fbank before it and the pooling, PLDA and clustering after it stay fp32, as for bf16.

Agreement is ``diarization.core.precision``'s test, unchanged: each recording (pyannote's sample, AMI tst00 and dev00)
diarized free and with the speaker count forced, in fp32 and with the candidate trunk; a candidate agrees only if
every RTTM is identical and every (chunk, speaker) embedding has cosine >= ``MIN_COSINE`` to its fp32 twin. bf16 runs
beside it as the yardstick. Weights: real segmentation-3.0 with the production-architecture embedding (random
weights: trained WeSpeaker weights are not reachable here), like ``tests/test_precision.py``.

Output: a table on stdout and ``.bench/int8.json``; the figures go to docs/PERFORMANCE.md by hand.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "function"), str(ROOT / "bench")]

RECORDINGS = {"sample.wav": 2, "tst00.wav": 4, "dev00.wav": None}
"""Scored recordings and their forced speaker count (None: what the free fp32 run found, at least 2)."""
CALIBRATION = ("trn01.wav", "trn02.wav", "trn03.wav")
CALIBRATION_CHUNKS = 48


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".bench")
    parser.add_argument("--models", type=Path, default=ROOT / ".models", help="where the generated pipelines live")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=ROOT / ".models" / "offline-production",
        help="a production-architecture pipeline",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--keep-fp32",
        default="",
        help="comma-separated submodules of the trunk left in fp32 (e.g. resnet.conv1,resnet.layer4): the usual way to "
        "buy back accuracy",
    )
    parser.add_argument("--output", type=Path, help="default: WORK_DIR/int8.json")
    args = parser.parse_args()

    from diarization.core.runtime import prepare_environment

    prepare_environment()
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from quality_data import fetch

    from diarization.core.config import Settings
    from diarization.core.loader import load_pipeline
    from diarization.core.modeldir import MANIFEST_FILE
    from diarization.modelmaking.realweights.pipeline import write_mixed_pipeline

    data = fetch(args.models / "quality-data")
    model_dir = args.work_dir / "int8-pipeline"
    if not (model_dir / MANIFEST_FILE).is_file():
        write_mixed_pipeline(model_dir, args.model_dir, args.models / "real-weights-cache", "bench")

    settings = Settings(model_dir=model_dir, device="cpu", num_threads=args.threads, embedding_precision="fp32")
    pipeline = load_pipeline(settings).pipeline
    resnet = pipeline._embedding.model_.resnet
    started = time.perf_counter()
    kept = [name for name in args.keep_fp32.split(",") if name]
    quantized = quantize(pipeline._embedding.model_, [data / name for name in CALIBRATION], kept)
    quantize_seconds = time.perf_counter() - started

    rows = []
    for name, count in RECORDINGS.items():
        path = data / name
        reference_free = run(pipeline, path, "fp32", {}, resnet, None)
        forced = {"num_speakers": count or max(2, len(reference_free["annotation"].labels()))}
        reference_forced = run(pipeline, path, "fp32", forced, resnet, None)
        for hints, reference in (({}, reference_free), (forced, reference_forced)):
            for candidate in ("int8", "bf16"):
                outcome = run(pipeline, path, candidate, hints, resnet, quantized)
                if np.array_equal(outcome["embeddings"], reference["embeddings"], equal_nan=True):
                    raise SystemExit(f"int8: {candidate} gave fp32's embeddings bit for bit: it did not run")
                rows.append(compare(name, hints, candidate, reference, outcome))
    report = {
        "threads": args.threads,
        "torch": torch.__version__,
        "quantized_engine": torch.backends.quantized.engine,
        "calibration": {"recordings": list(CALIBRATION), "chunks": CALIBRATION_CHUNKS},
        "kept_fp32": kept,
        "quantize_seconds": round(quantize_seconds, 2),
        "rows": rows,
    }
    args.work_dir.mkdir(parents=True, exist_ok=True)
    (args.output or args.work_dir / "int8.json").write_text(json.dumps(report, indent=1))
    print_table(report)


def quantize(model: Any, calibration: list[Path], kept: list[str]) -> Any:
    """The folded trunk as an int8 FX graph: observers calibrated on fbanks of ``CALIBRATION_CHUNKS`` chunks; the
    ``kept`` submodules stay fp32."""
    import numpy as np
    import torch
    from torch import nn
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from diarization.core.audio import decode_audio

    class Frames(nn.Module):
        def __init__(self, resnet: nn.Module) -> None:
            super().__init__()
            self.resnet = resnet

        def forward(self, fbank: torch.Tensor) -> torch.Tensor:
            frames: torch.Tensor = self.resnet.forward_frames(fbank)
            return frames

    torch.backends.quantized.engine = "x86"
    chunk = 10 * 16_000
    waveforms = []
    for path in calibration:
        samples = decode_audio(path, max_bytes=2**31, max_seconds=3600).samples
        waveforms += [samples[start : start + chunk] for start in range(0, len(samples) - chunk + 1, chunk)]
    batch = torch.from_numpy(np.stack(waveforms[:CALIBRATION_CHUNKS])).unsqueeze(1)
    with torch.no_grad():  # not inference_mode: the observers update their state in place during calibration
        fbank = model.compute_fbank(batch)
    trunk = Frames(copy.deepcopy(model.resnet)).eval().to(memory_format=torch.contiguous_format)
    mapping = get_default_qconfig_mapping("x86")
    for name in kept:
        mapping.set_module_name(name, None)
    prepared = prepare_fx(trunk, mapping, example_inputs=(fbank[:1],))
    with torch.no_grad():
        for start in range(0, len(fbank), 8):
            prepared(fbank[start : start + 8])
    return convert_fx(prepared)


def run(pipeline: Any, path: Path, candidate: str, hints: dict[str, int], resnet: Any, quantized: Any) -> dict:
    """One diarization: the fp32/bf16 trunk through ``trunk_precision``, int8 by standing in for forward_frames."""
    import torch

    from diarization.core.audio import decode_audio
    from diarization.modelmaking.proof import _run

    audio = decode_audio(path, max_bytes=2**31, max_seconds=3600)
    file = {"waveform": torch.from_numpy(audio.samples).unsqueeze(0), "sample_rate": audio.sample_rate}
    if candidate == "int8":
        # A plain function goes to the instance's __dict__ and shadows the method (a Module would be registered as a
        # submodule instead, and the method would still be found first).
        resnet.forward_frames = lambda fbank: quantized(fbank)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        annotation, embeddings = _run(pipeline, file, "fp32" if candidate == "int8" else candidate, hints)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        resnet.__dict__.pop("forward_frames", None)
        pipeline.trunk_precision = "fp32"
    return {"annotation": annotation, "embeddings": embeddings, "wall": wall, "cpu": cpu}


def compare(name: str, hints: dict[str, int], candidate: str, reference: dict, outcome: dict) -> dict[str, Any]:
    from diarization.modelmaking.proof import min_cosine

    return {
        "recording": name,
        "num_speakers": hints.get("num_speakers"),
        "candidate": candidate,
        "min_cosine": round(min_cosine(reference["embeddings"], outcome["embeddings"]), 7),
        "rttm_identical": reference["annotation"].to_rttm() == outcome["annotation"].to_rttm(),
        "turns": [len(reference["annotation"]), len(outcome["annotation"])],
        "speakers": [len(reference["annotation"].labels()), len(outcome["annotation"].labels())],
        "wall_seconds": [round(reference["wall"], 2), round(outcome["wall"], 2)],
        "cpu_seconds": [round(reference["cpu"], 2), round(outcome["cpu"], 2)],
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"threads {report['threads']}, torch {report['torch']}, engine {report['quantized_engine']}, "
        f"kept in fp32: {', '.join(report['kept_fp32']) or 'nothing'}"
    )
    print(
        "| recording | speakers forced | candidate | min cosine | RTTM identical | turns fp32/cand | CPU s fp32/cand |"
    )
    print("|---|---:|---|---:|---|---|---|")
    for row in report["rows"]:
        print(
            f"| {row['recording']} | {row['num_speakers'] or 'free'} | {row['candidate']} | {row['min_cosine']:.6f} "
            f"| {'yes' if row['rttm_identical'] else 'NO'} | {row['turns'][0]}/{row['turns'][1]} "
            f"| {row['cpu_seconds'][0]}/{row['cpu_seconds'][1]} |"
        )


if __name__ == "__main__":
    main()
