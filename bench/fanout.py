"""``make bench-fanout``: one file as 1, 2 and 4 shards plus the reduce, measured; a cost and wall-clock model from it.

All in one process (so the cold start is paid once and reported apart): the production-architecture offline pipeline
(random weights, the pretrained models' compute) on the fast embedding path at ``--threads`` threads, the audio of
``make bench`` (pyannote's sample repeated: speech throughout). For each shard count the shards run one after
another, each on only its own samples (:func:`diarization.fanout.shards.compute_shard`), then the reduce; wall-clock
(``perf_counter``) and process CPU time (``process_time``: user + system of every thread) are taken per step. Every
shard count must give the same RTTM (checked; a difference fails the run).

The page (docs/FANOUT.md) adds a model for 1 h and 4 h files on 6-vCPU (10,240 MB) Lambda functions from the measured
per-chunk cost; see :func:`model` for its assumptions. ``--render`` rewrites the page from the last results.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"30s": 30, "2min": 120, "10min": 600, "60min": 3600}
"""Audio lengths: pyannote's 30 s sample repeated (cut) to that length; 60min only on request (about 20 minutes
per shard count on a quiet machine here)."""

PRICES = {
    "lambda_x86_gb_second": 0.0000166667,
    "lambda_arm_gb_second": 0.0000133334,
    "lambda_request": 0.20 / 1_000_000,
    "state_transition": 0.025 / 1_000,
    "s3_put": 0.005 / 1_000,
    "s3_get": 0.0004 / 1_000,
}
"""US East (N. Virginia) list prices: https://aws.amazon.com/lambda/pricing/ (x86 and Arm per GB-second, requests),
https://aws.amazon.com/step-functions/pricing/ (Standard workflows, per state transition),
https://aws.amazon.com/s3/pricing/ (S3 Standard PUT and GET requests)."""

FUNCTION_GB = 10_240 / 1024
FUNCTION_VCPUS = 6
"""Lambda gives 6 vCPUs at 10,240 MB, its maximum."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=ROOT / ".models" / "offline-production")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".bench", help="generated audio and results")
    parser.add_argument("--sizes", default="10min", help="comma-separated: " + ", ".join(SIZES))
    parser.add_argument("--shards", default="1,2,4", help="comma-separated shard counts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "FANOUT.md")
    parser.add_argument("--render", action="store_true", help="only rewrite the page from the last fanout.json")
    parser.add_argument("--append", action="store_true", help="add the rows to the last fanout.json's")
    args = parser.parse_args()

    results_file = args.work_dir / "fanout.json"
    if args.render:
        args.output.write_text(render(json.loads(results_file.read_text())))
        return
    sizes = [size for size in args.sizes.split(",") if _known(size)]
    counts = [int(count) for count in args.shards.split(",")]
    os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))

    earlier = json.loads(results_file.read_text()) if args.append and results_file.exists() else None

    def save(run: dict[str, Any]) -> None:
        """After every row, so an interrupted run still leaves what it measured."""
        if earlier is not None:
            run = {**earlier, "rows": earlier["rows"] + run["rows"], "appended": [*earlier.get("appended", []), run]}
        args.work_dir.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(run, indent=1))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(render(run))

    measure(args.model_dir, sizes, counts, args.threads, save)


def _known(size: str) -> bool:
    if size not in SIZES:
        raise SystemExit(f"bench: {size!r} is not one of {', '.join(SIZES)}")
    return True


def measure(
    model_dir: Path,
    sizes: list[str],
    counts: list[int],
    threads: int,
    save: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Rows of (size, shard count): per-shard and reduce wall/CPU seconds, the RTTM's digest."""
    sys.path[:0] = [str(ROOT / "function"), str(ROOT / "bench"), str(ROOT)]
    started = time.perf_counter()
    import numpy as np
    from run import _commit

    from diarization.core.audio import SAMPLE_RATE, DecodedAudio, decode_audio
    from diarization.core.config import Settings
    from diarization.core.engine import Diarizer, peak_of
    from diarization.core.hints import SpeakerHints
    from diarization.core.runtime import prepare_environment
    from diarization.fanout.plan import batch_alignment
    from diarization.fanout.shards import compute_shard, grid_for, reduce_shards, shard_plan
    from infra.media import sample_wav

    prepare_environment(offline=True)
    sample = decode_audio(sample_wav(), max_bytes=2**34, max_seconds=60)
    diarizer = Diarizer.from_settings(Settings(model_dir=model_dir, device="cpu", num_threads=threads))
    pipeline = diarizer.loaded.pipeline
    alignment = batch_alignment(int(pipeline.segmentation_batch_size), int(pipeline.embedding_batch_size))
    run: dict[str, Any] = {
        "started": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        "commit": _commit(),
        "model_dir": str(model_dir),
        "threads": threads,
        "fast_embeddings": diarizer.loaded.fast_embeddings,
        "batch_sizes": [int(pipeline.segmentation_batch_size), int(pipeline.embedding_batch_size)],
        "cold_start_seconds": time.perf_counter() - started,
        "allocator": os.environ.get("LD_PRELOAD") or "glibc malloc",
        "rows": [],
    }
    for size in sizes:
        samples = np.resize(sample.samples, SIZES[size] * SAMPLE_RATE)
        audio = DecodedAudio(samples, dataclasses.replace(sample.facts, duration_seconds=float(SIZES[size])))
        grid = grid_for(diarizer, len(samples))
        digests = set()
        warm = shard_plan(diarizer, len(samples), alignment)[0]
        warm_started = time.perf_counter()
        compute_shard(diarizer, samples[warm.sample_start : warm.sample_stop].copy(), warm)
        run.setdefault("warm_up_seconds", time.perf_counter() - warm_started)
        for count in counts:
            per_shard = math.ceil(math.ceil(grid.num_chunks / count) / alignment) * alignment
            plan = shard_plan(diarizer, len(samples), per_shard)
            shards, parts = [], []
            for shard in plan:
                piece = samples[shard.sample_start : shard.sample_stop].copy()
                wall, cpu = time.perf_counter(), time.process_time()
                parts.append(compute_shard(diarizer, piece, shard))
                shards.append(
                    {
                        "chunks": shard.stop_chunk - shard.first_chunk,
                        "wall_seconds": time.perf_counter() - wall,
                        "cpu_seconds": time.process_time() - cpu,
                        "part_bytes": len(parts[-1]),
                    }
                )
            wall, cpu = time.perf_counter(), time.process_time()
            result = reduce_shards(
                diarizer, parts, len(samples), audio.facts, SpeakerHints(), size, peak=peak_of(samples)
            )
            reduce_wall, reduce_cpu = time.perf_counter() - wall, time.process_time() - cpu
            digest = hashlib.sha256(result.to_rttm().encode()).hexdigest()[:12]
            digests.add(digest)
            run["rows"].append(
                {
                    "size": size,
                    "audio_seconds": audio.duration_seconds,
                    "chunks": grid.num_chunks,
                    "shards": shards,
                    "reduce_wall_seconds": reduce_wall,
                    "reduce_cpu_seconds": reduce_cpu,
                    "speakers": len(result.speakers),
                    "rttm_sha256": digest,
                    "load": os.getloadavg()[1],
                }
            )
            print(f"bench-fanout: {size} as {len(plan)} shard(s): {_summary(run['rows'][-1])}", file=sys.stderr)
            save(run)
        if len(digests) != 1:
            raise SystemExit(f"bench-fanout: {size}: the shard counts gave different RTTMs {sorted(digests)}")
    return run


def _summary(row: dict[str, Any]) -> str:
    walls = sum(s["wall_seconds"] for s in row["shards"])
    return f"shards {walls:.1f} s wall, reduce {row['reduce_wall_seconds']:.2f} s"


@dataclass(frozen=True)
class Assumptions:
    """What the model takes beyond the measured figures (each one stated on the page)."""

    chunks_per_shard: int = 600
    """10 minutes of audio per shard."""
    max_concurrency: int = 8
    """The Map state's MaxConcurrency: template.yaml's FanOutMaxConcurrency default."""
    busy_vcpus: float = FUNCTION_VCPUS
    """How many of the function's 6 vCPUs the shard keeps busy: all of them is ideal scaling of the CPU time
    measured at 2 threads (an assumption, not measured)."""
    cold_start_seconds: float = 10.0
    """Per function start (image pull cached, imports, model load); measured in-process cold start is shown."""
    step_seconds: float = 1.0
    """Plan and publish steps, each, at the same memory (they read metadata and write small objects)."""
    transitions_per_shard: int = 3
    """Map iteration + the shard's Task (+ its retry wrapper), from the definition."""
    fixed_transitions: int = 6
    """Start, plan, Map, reduce, publish, succeed."""


def model(per_chunk_cpu: float, reduce_linear: float, hours: float, a: Assumptions) -> dict[str, float]:
    """Wall-clock and cost of one ``hours``-long file, fanned out on 6-vCPU functions.

    ``per_chunk_cpu`` is the measured shard CPU seconds per chunk (CPU, not wall: this machine is shared, and CPU
    time is what the cores actually spent; a function's wall-clock is it over the vCPUs it keeps busy, ideally all
    six: ``Assumptions.busy_vcpus``); ``reduce_linear`` the measured
    reduce seconds per audio second (its linear part: reading parts, reconstruction); clustering's superlinear time
    comes from docs/CAPACITY.md's fitted curve (``capacity.estimate_clustering_seconds``, single-threaded).
    """
    from diarization.core import capacity

    seconds = hours * 3600
    chunks = capacity.num_chunks(seconds)
    shards = math.ceil(chunks / a.chunks_per_shard)
    waves = math.ceil(shards / a.max_concurrency)
    per_chunk = per_chunk_cpu / a.busy_vcpus
    shard_wall = a.cold_start_seconds + min(a.chunks_per_shard, chunks) * per_chunk
    clustering = capacity.estimate_clustering_seconds(seconds)
    reduce_wall = a.cold_start_seconds + reduce_linear * seconds + clustering
    wall = 2 * a.step_seconds + waves * shard_wall + reduce_wall
    gb_seconds = FUNCTION_GB * (shards * shard_wall + reduce_wall + 2 * a.step_seconds)
    requests = shards + 3
    transitions = a.fixed_transitions + a.transitions_per_shard * shards
    puts = 2 + shards + 2
    gets = 2 * shards + shards + 1
    other = requests * PRICES["lambda_request"] + transitions * PRICES["state_transition"]
    other += puts * PRICES["s3_put"] + gets * PRICES["s3_get"]
    single = chunks * per_chunk + clustering
    return {
        "hours": hours,
        "chunks": chunks,
        "shards": shards,
        "shard_wall": shard_wall,
        "reduce_wall": reduce_wall,
        "clustering": clustering,
        "wall": wall,
        "single_wall": single,
        "gb_seconds": gb_seconds,
        "transitions": transitions,
        "cost_x86": gb_seconds * PRICES["lambda_x86_gb_second"] + other,
        "cost_arm": gb_seconds * PRICES["lambda_arm_gb_second"] + other,
        "cost_other": other,
    }


def render(run: dict[str, Any]) -> str:
    sys.path[:0] = [str(ROOT / "function")]
    rows = run["rows"]
    lines = [
        "# Fan-out: shards and reduce, measured, and what 1 h and 4 h files cost",
        "",
        "Generated by `make bench-fanout` (`bench/fanout.py`); do not edit by hand. One process, the production-",
        "architecture offline pipeline (random weights, the pretrained models' compute), fast embedding path, "
        f"{run['threads']} threads, batch sizes {run['batch_sizes'][0]} (segmentation) and {run['batch_sizes'][1]} "
        "(embedding), audio = pyannote's sample repeated (speech throughout), allocator "
        f"{run.get('allocator', 'not recorded')}. Shards run one after another, each on only its own samples; CPU = "
        "process time (user + system, all threads).",
        "",
        f"Run started {run['started']} at commit {run['commit']}; in-process cold start (imports + load) "
        f"{run['cold_start_seconds']:.1f} s, and a first shard of one batch to warm the kernels up "
        f"({run.get('warm_up_seconds', 0.0):.1f} s), not in the rows. This machine is shared and noisy: wall-clock "
        "above CPU / threads means other processes had the cores.",
        "",
        *(
            f"Rows added by a later run (`--append`): started {later['started']} at commit {later['commit']}, cold "
            f"start {later['cold_start_seconds']:.1f} s, warm-up {later.get('warm_up_seconds', 0.0):.1f} s."
            for later in run.get("appended", [])
        ),
        "",
        "## Measured",
        "",
        "| Audio | Chunks | Shards | Shard wall (s) | Shard CPU (s) | Reduce wall (s) | Reduce CPU (s) | Sum wall (s) "
        "| Sum CPU (s) | Wall per chunk (s) | CPU per chunk (s) | RTTM |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        walls = [s["wall_seconds"] for s in row["shards"]]
        cpus = [s["cpu_seconds"] for s in row["shards"]]
        lines.append(
            f"| {row['size']} | {row['chunks']} | {len(walls)} | {' + '.join(f'{w:.1f}' for w in walls)} "
            f"| {' + '.join(f'{c:.1f}' for c in cpus)} | {row['reduce_wall_seconds']:.2f} "
            f"| {row['reduce_cpu_seconds']:.2f} | {sum(walls) + row['reduce_wall_seconds']:.1f} "
            f"| {sum(cpus) + row['reduce_cpu_seconds']:.1f} | {sum(walls) / row['chunks']:.3f} "
            f"| {sum(cpus) / row['chunks']:.3f} | `{row['rttm_sha256']}` |"
        )
    lines += [
        "",
        "5-minute load average at the end of each row (where recorded): "
        + (", ".join(f"{row['size']} as {len(row['shards'])}: {row['load']:.1f}" for row in rows if "load" in row))
        + ". Under load the same work costs more CPU time (busy sibling "
        "hyperthreads, shared caches): docs/BENCHMARKS.md's quieter run of the same path, 10 min at 2 threads, spent "
        "330 CPU s (0.56 per chunk).",
        "",
        "Every shard count gives the same RTTM (the digest column; the run fails otherwise), as the equivalence test "
        "proves on real speech (tests/test_fanout_core.py). The shards' work adds up to the single run's: splitting "
        "costs nothing but each function's cold start; the reduce is a small fraction.",
        "",
        "Why the answer is the same: a shard runs pyannote's own segmentation and embedding steps on the samples of "
        "its chunks, which start on a chunk boundary, so pyannote's sliding window reproduces the file's chunks; "
        "shard boundaries are multiples of both batch sizes, so every batch is the single run's batch and the same "
        "kernels see the same inputs; the reduce runs pyannote's own `apply` (speaker counting, clustering, "
        "reconstruction) on the concatenated arrays. See `function/diarization/fanout/shards.py`.",
    ]
    if rows:
        lines += _model_section(rows)
    return "\n".join(lines) + "\n"


def _model_section(rows: list[dict[str, Any]]) -> list[str]:
    a = Assumptions()
    chunks = sum(row["chunks"] for row in rows)
    per_chunk_wall = sum(s["wall_seconds"] for row in rows for s in row["shards"]) / chunks
    reduce_cpu = sum(row["reduce_cpu_seconds"] for row in rows)
    per_chunk_cpu = sum(s["cpu_seconds"] for row in rows for s in row["shards"]) / chunks
    reduce_linear = reduce_cpu / sum(row["audio_seconds"] for row in rows)
    models = [model(per_chunk_cpu, reduce_linear, hours, a) for hours in (1.0, 4.0)]
    lines = [
        "",
        "## Model: 1 h and 4 h files on 6-vCPU functions",
        "",
        f"From the rows above: {per_chunk_cpu:.3f} s CPU per chunk in the shards ({per_chunk_wall:.3f} s wall at "
        f"2 threads on this shared machine), reduce {reduce_linear * 3600:.1f} CPU s per audio hour besides "
        "clustering. **A model, not a measurement**: it assumes",
        "",
        f"- a 6-vCPU function spends the same CPU seconds per chunk and keeps {a.busy_vcpus:.0f} vCPUs busy, so a "
        f"chunk takes {per_chunk_cpu:.3f} / {a.busy_vcpus:.0f} s (ideal thread scaling of the CPU time measured at 2 "
        "threads on this CPU; real scaling is lower and Lambda's CPUs differ: measure there before relying on it);",
        f"- {a.chunks_per_shard} chunks per shard (10 min of audio), at most {a.max_concurrency} shards at once, "
        f"{a.cold_start_seconds:.0f} s cold start per function, plan and publish {a.step_seconds:.0f} s each;",
        "- clustering time from docs/CAPACITY.md's fitted curve (single-threaded, worst case 3 speakers per chunk); "
        "it grows faster than the audio and dominates the reduce of a 4 h file;",
        f"- every function at 10,240 MB; {a.transitions_per_shard} state transitions per shard and "
        f"{a.fixed_transitions} per execution (count them again if the definition changes); S3: 4 + shards PUTs, "
        "3 × shards + 1 GETs;",
        "- Arm at x86's speed (not measured: Graviton's speed on these models is unknown here).",
        "",
        "| Audio | Chunks | Shards | Shard wall (s) | Reduce wall (s) (clustering) | Fan-out wall-clock | One "
        "invocation would need | GB-s | Transitions | Cost x86 | Cost Arm | per audio hour (x86) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in models:
        lines.append(
            f"| {m['hours']:.0f} h | {m['chunks']:,} | {m['shards']} | {m['shard_wall']:.0f} "
            f"| {m['reduce_wall']:.0f} ({m['clustering']:.0f}) | {_minutes(m['wall'])} | {_minutes(m['single_wall'])} "
            f"| {m['gb_seconds']:,.0f} | {m['transitions']} | ${m['cost_x86']:.3f} | ${m['cost_arm']:.3f} "
            f"| ${m['cost_x86'] / m['hours']:.3f} |"
        )
    lines += [
        "",
        "Prices (US East, list): Lambda $0.0000166667 per GB-second on x86 and $0.0000133334 on Arm, $0.20 per "
        "million requests (https://aws.amazon.com/lambda/pricing/); Step Functions Standard $0.025 per 1,000 state "
        "transitions (https://aws.amazon.com/step-functions/pricing/); S3 Standard $0.005 per 1,000 PUTs and $0.0004 "
        "per 1,000 GETs (https://aws.amazon.com/s3/pricing/). Requests, transitions and S3 together: "
        + ", ".join(f"${m['cost_other']:.4f} at {m['hours']:.0f} h" for m in models)
        + "; GB-seconds are nearly all of the cost, and they are the same work as one invocation's plus a cold start "
        "per shard. Free tiers are ignored.",
        "",
        "## Reproduce",
        "",
        "```",
        "make bench-fanout                                      # 10 min as 1, 2 and 4 shards -> this page",
        "make bench-fanout BENCH_ARGS='--sizes 60min --append'  # adds 60 min rows (~20 min per shard count here)",
        ".venv/bin/python bench/fanout.py --render              # rewrite the page from .bench/fanout.json",
        "```",
    ]
    return lines


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


if __name__ == "__main__":
    main()
