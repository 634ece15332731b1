"""One benchmark row, in a fresh process: cold start, per-stage timings and peak memory of one path.

Run by ``bench/run.py``, one process per row, so import time and peak RSS belong to that row
alone. ``--path upstream`` is pyannote.audio as installed (``Pipeline.from_pretrained``, its own
``get_embeddings``) with an embedding batch of 1: its fastest CPU setting and so the fair baseline,
although community-1's ``config.yaml`` (copied by the offline pipeline) says 32; ``--path
upstream-batch32`` keeps that 32 (choose it to see what the shipped config costs on CPU);
``--path fast`` is this project's loader with :mod:`diarization.core.fastpath` in fp32, ``--path fast-bf16``
the same with the ResNet trunk in bf16 (``EMBEDDING_PRECISION=bf16``: forced, because the bench's
generated directory is not proven, so ``auto`` would stay fp32).
Both get the same in-memory waveform (decoded by this project's PyAV decoder: upstream's own
decoder, torchcodec, needs system FFmpeg libraries that the image does not ship).

Prints one JSON object; writes the embeddings and RTTM next to ``--artifacts`` so the
orchestrator can compare the two paths.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--path", choices=("upstream", "upstream-batch32", "fast", "fast-bf16"), required=True)
    parser.add_argument("--audio", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--artifacts", type=Path, required=True, help="prefix for the .npy and .rttm written")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "function"))
    os.environ["PYANNOTE_METRICS_ENABLED"] = "false"
    os.environ["HF_HUB_OFFLINE"] = "1"
    started = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    torch_imported = time.perf_counter()
    if args.path.startswith("upstream"):
        from pyannote.audio import Pipeline

        pyannote_imported = time.perf_counter()
        pipeline = Pipeline.from_pretrained(args.model_dir)
        loaded = time.perf_counter()
        pipeline.embedding_batch_size = 32 if args.path == "upstream-batch32" else 1
    else:
        import pyannote.audio  # noqa: F401  (timed apart from the load, like upstream's row)

        from diarization.core.config import Settings
        from diarization.core.loader import load_pipeline

        pyannote_imported = time.perf_counter()
        precision = "bf16" if args.path == "fast-bf16" else "fp32"
        settings = Settings(
            model_dir=args.model_dir, device="cpu", num_threads=args.threads, embedding_precision=precision
        )
        pipeline = load_pipeline(settings).pipeline
        loaded = time.perf_counter()
    rss_after_load = _peak_rss_bytes()

    from diarization.core.audio import decode_audio

    decode_started = time.perf_counter()
    audio = decode_audio(args.audio, max_bytes=2**34, max_seconds=10 * 3600)
    decoded = time.perf_counter()

    marks: dict[str, float] = {}

    def hook(step: str, artifact: Any, file: Any = None, total: Any = None, completed: Any = None) -> None:
        if total is None and completed is None:
            marks[step] = time.perf_counter()
            if step == "embeddings":
                import numpy as np

                np.save(f"{args.artifacts}.npy", artifact)

    waveform = torch.from_numpy(audio.samples).unsqueeze(0)
    with torch.inference_mode():
        run_started = time.perf_counter()
        output = pipeline({"waveform": waveform, "sample_rate": audio.sample_rate, "uri": "bench"}, hook=hook)
        finished = time.perf_counter()
    Path(f"{args.artifacts}.rttm").write_text(output.speaker_diarization.to_rttm())

    usage = resource.getrusage(resource.RUSAGE_SELF)
    diarize = finished - run_started
    row = {
        "path": args.path,
        "audio": args.audio.name,
        "audio_seconds": audio.duration_seconds,
        "threads": args.threads,
        "import_torch_seconds": torch_imported - started,
        "import_pyannote_seconds": pyannote_imported - torch_imported,
        "load_seconds": loaded - pyannote_imported,
        "cold_start_seconds": loaded - started,
        "decode_seconds": decoded - decode_started,
        "segmentation_seconds": marks["segmentation"] - run_started,
        "embedding_seconds": marks["embeddings"] - marks["speaker_counting"],
        "clustering_seconds": finished - marks["embeddings"],
        "diarize_seconds": diarize,
        "real_time_factor": (decoded - decode_started + diarize) / audio.duration_seconds,
        "peak_rss_after_load_bytes": rss_after_load,
        "peak_rss_bytes": _peak_rss_bytes(),
        "cpu_user_seconds": usage.ru_utime,
        "cpu_system_seconds": usage.ru_stime,
        "speakers": len(output.speaker_diarization.labels()),
        "turns": len(output.speaker_diarization),
        "embedding_batch_size": int(pipeline.embedding_batch_size),
        "pipeline_class": type(pipeline).__name__,
        "embedding_precision": getattr(pipeline, "trunk_precision", "fp32"),
    }
    print(json.dumps(row))


def _peak_rss_bytes() -> int:
    """VmHWM: the process's peak resident set so far (ru_maxrss is the same figure, in KiB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    main()
