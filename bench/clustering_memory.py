"""Peak memory and time of pyannote's clustering against its size, scipy's linkage and fastcluster's (issues #10, #13).

Each size runs in a FRESH subprocess, so its peak RSS belongs to that size alone. The worker builds what
community-1's ``SpeakerDiarization.apply`` hands to its clustering, on synthetic data:

* ``embeddings``: ``(num_chunks, 3, 256)`` float32, one row per (10 s chunk, local speaker). Active pairs
  carry a speaker embedding (a few global speakers: unit centroids sharing a common component, plus noise
  that drifts slowly from chunk to chunk, since consecutive chunks share 9 s of audio); some pairs are
  valid but speak too little (pyannote filters them out); the rest are NaN (inactive speakers).
* ``segmentations``: binarized ``(num_chunks, 589, 3)`` float32 (segmentation-3.0's frames per chunk):
  each active speaker owns at least 20 % of the frames alone, so ``filter_embeddings`` keeps it.
* pyannote's own ``VBxClustering`` with a PLDA written exactly as ``diarization.modelmaking.offline`` writes it, and
  community-1's parameters (threshold 0.6, Fa 0.07, Fb 0.8), called as ``apply`` calls it
  (``num_clusters=None, min_clusters=1, max_clusters=inf``).

Chunks: community-1 slides a 10 s window by 10 % of it (1 s), so ``num_chunks ≈ audio seconds``. The
measured embeddings ``n`` are the active (chunk, speaker) pairs; ``--active-per-chunk`` sets their mean
(default 2.5: a busy meeting, ~36,000 for 4 h; at most 3).

Peak RSS: the worker resets the kernel's high-water mark (``/proc/self/clear_refs``) right before the
call and reads ``VmHWM`` after it; the increase is ``VmHWM - VmRSS before``. torch/BLAS threads are set
before numpy is imported.

Linkage (issue #13): ``scipy`` is pyannote's own call, ``scipy.cluster.hierarchy.linkage`` (8·n² bytes);
``vector`` is :mod:`diarization.core.linkage` forced at every size, i.e. ``fastcluster.linkage_vector`` (O(n·d)).
Both run pyannote's own ``VBxClustering.__call__`` (the whole call is timed: filtering, linkage, PLDA, VBx,
centroids and assignment).

Usage::

    python bench/clustering_memory.py                       # n = 2k … 48k, scipy and vector, 1 thread
    python bench/clustering_memory.py --embeddings 8k,16k --linkage vector --json out.json --markdown out.md
    python bench/clustering_memory.py --sizes 10min,1h --two-threads 1h

A size is skipped when its predicted peak (scipy: 8 bytes × n², pdist plus linkage's copy; vector: 16 kB × n)
would exceed ``--max-extra-gib`` (6) or 60 % of the memory available now; a worker is killed after
``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WINDOW_SECONDS = 10.0
STEP_SECONDS = 1.0
LOCAL_SPEAKERS = 3
FRAMES_PER_CHUNK = 589
DIMENSION = 256
MIN_ACTIVE_RATIO = 0.2
"""pyannote's ``filter_embeddings`` keeps a (chunk, speaker) pair with at least this share of clean frames."""
PARAMETERS = {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8}
"""community-1's clustering parameters (its config.yaml, and ``diarization.modelmaking.offline.pipeline_config``)."""
DEFAULT_EMBEDDINGS = "2k,4k,8k,16k,32k,48k"
"""The curve's sizes in embeddings n; each is skipped where its predicted peak exceeds ``--max-extra-gib``."""


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10min``, ``1.5h`` → seconds."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(s|min|m|h)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (examples: 600, 90s, 10min, 2h)")
    value = float(match.group(1))
    unit = match.group(2) or "s"
    return value * {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}[unit]


def label(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def audio_seconds_for(embeddings: int, active_per_chunk: float) -> float:
    """The audio length whose chunks hold about ``embeddings`` at ``active_per_chunk`` (whole seconds)."""
    return float(math.ceil(embeddings / active_per_chunk) + WINDOW_SECONDS - STEP_SECONDS)


def num_chunks(audio_seconds: float) -> int:
    """pyannote's sliding window: every full 10 s window at 1 s steps, plus a padded last one."""
    if audio_seconds <= WINDOW_SECONDS:
        return 1
    return math.ceil((audio_seconds - WINDOW_SECONDS) / STEP_SECONDS) + 1


# --------------------------------------------------------------------------------------------- worker


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False if the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def synthetic_inputs(chunks: int, active_per_chunk: float, speakers: int, seed: int) -> tuple[Any, Any, int]:
    """Embeddings ``(chunks, 3, 256)`` and binarized segmentations ``(chunks, 589, 3)`` as pyannote has them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    common = rng.standard_normal(DIMENSION)
    centroids = 0.5 * common / np.linalg.norm(common) + rng.standard_normal((speakers, DIMENSION)) / math.sqrt(
        DIMENSION
    )
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    # Within-speaker noise of squared norm ~0.45 (cosine ≈ 0.69 between distant chunks of one speaker):
    # 0.35 drifts (AR(1), rho = 0.9 per 1 s step), 0.10 is independent per chunk.
    rho = 0.9
    drift_scale = math.sqrt(0.35 / DIMENSION)
    fresh_scale = math.sqrt(0.10 / DIMENSION)
    drift = rng.standard_normal((speakers, DIMENSION)) * drift_scale

    embeddings = np.full((chunks, LOCAL_SPEAKERS, DIMENSION), np.nan, dtype=np.float32)
    segmentations = np.zeros((chunks, FRAMES_PER_CHUNK, LOCAL_SPEAKERS), dtype=np.float32)
    low, high = math.floor(active_per_chunk), math.ceil(active_per_chunk)
    p_high = active_per_chunk - low
    clean = math.ceil(MIN_ACTIVE_RATIO * FRAMES_PER_CHUNK) + 5
    current = list(rng.choice(speakers, size=LOCAL_SPEAKERS, replace=False))
    active_total = 0
    for c in range(chunks):
        drift = rho * drift + math.sqrt(1 - rho**2) * rng.standard_normal((speakers, DIMENSION)) * drift_scale
        if rng.random() < 0.1:  # a turn change: one local slot now holds another global speaker
            slot = int(rng.integers(LOCAL_SPEAKERS))
            others = [g for g in range(speakers) if g not in current]
            current[slot] = int(rng.choice(others))
        active = high if rng.random() < p_high else low
        active = max(1, min(LOCAL_SPEAKERS, active))
        slots = rng.permutation(LOCAL_SPEAKERS)
        for rank, slot in enumerate(slots):
            g = current[slot]
            vector = centroids[g] + drift[g] + rng.standard_normal(DIMENSION) * fresh_scale
            if rank < active:
                # enough clean (single-speaker) frames: kept by filter_embeddings
                start = rank * (FRAMES_PER_CHUNK // LOCAL_SPEAKERS)
                segmentations[c, start : start + clean, slot] = 1.0
                embeddings[c, slot] = vector
                active_total += 1
            elif rank == active and rng.random() < 0.5:
                # speaks a little (valid embedding, too few clean frames): filtered out, still assigned
                segmentations[c, -40:, slot] = 1.0
                embeddings[c, slot] = vector
            # else: inactive, NaN embedding and no frames
    return embeddings, segmentations, active_total


def worker(args: argparse.Namespace) -> dict[str, Any]:
    threads = str(args.threads)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = threads
    os.environ["PYANNOTE_METRICS_ENABLED"] = "false"
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT / "function"))
    import gc
    import tempfile

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from pyannote.audio.core.plda import PLDA
    from pyannote.audio.pipelines import clustering as clustering_module
    from pyannote.core import SlidingWindow, SlidingWindowFeature

    from diarization.core import linkage as linkage_module
    from diarization.modelmaking.offline import _write_plda

    with tempfile.TemporaryDirectory() as tmp:
        _write_plda(Path(tmp), dimension=DIMENSION, seed=0)
        plda = PLDA(Path(tmp) / "xvec_transform.npz", Path(tmp) / "plda.npz")
    embeddings, binarized, active = synthetic_inputs(args.chunks, args.active_per_chunk, args.speakers, args.seed)
    segmentations = SlidingWindowFeature(
        binarized, SlidingWindow(start=0.0, duration=WINDOW_SECONDS, step=STEP_SECONDS)
    )

    # Time the phases by handing pyannote's own VBxClustering.__call__ timed versions of the two functions it
    # looks up in its module (diarization.core.linkage.rebind: no copies made, pyannote's module left alone).
    phases: dict[str, float] = {}
    seen: dict[str, int] = {}
    if args.linkage == "scipy":
        chosen_linkage: Any = clustering_module.linkage
    else:
        chosen_linkage = functools.partial(linkage_module.linkage, min_embeddings=0)

    def timed_linkage(*a: Any, **k: Any) -> Any:
        seen["clustered"] = len(a[0])  # what filter_embeddings kept
        started = time.perf_counter()
        try:
            return chosen_linkage(*a, **k)
        finally:
            phases["linkage_seconds"] = time.perf_counter() - started

    def timed_vbx(ahc_init: Any, *a: Any, **k: Any) -> Any:
        seen["ahc_clusters"] = int(ahc_init.max()) + 1
        started = time.perf_counter()
        try:
            return clustering_module.cluster_vbx(ahc_init, *a, **k)
        finally:
            phases["vbx_seconds"] = time.perf_counter() - started

    class TimedVBxClustering(clustering_module.VBxClustering):  # type: ignore[misc]
        __call__ = linkage_module.rebind(
            clustering_module.VBxClustering.__call__, linkage=timed_linkage, cluster_vbx=timed_vbx
        )

    clustering = TimedVBxClustering(plda, metric="cosine")
    clustering.instantiate(PARAMETERS)

    gc.collect()
    rss_before = _status_kib("VmRSS") * 1024
    reset = _reset_peak()
    started, cpu_started = time.perf_counter(), time.process_time()
    hard_clusters, _, centroids = clustering(
        embeddings=embeddings, segmentations=segmentations, num_clusters=None, min_clusters=1, max_clusters=np.inf
    )
    seconds = time.perf_counter() - started
    # On a shared machine the wall clock includes waiting for a core; CPU time is what a dedicated core takes.
    cpu_seconds = time.process_time() - cpu_started
    if reset:
        peak = _status_kib("VmHWM") * 1024
    else:  # whole-process peak: an upper bound on the increase
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    import scipy
    from pyannote.audio import __version__ as pyannote_version

    return {
        "versions": {"pyannote.audio": pyannote_version, "scipy": scipy.__version__, "numpy": np.__version__},
        "chunks": args.chunks,
        "pairs": args.chunks * LOCAL_SPEAKERS,
        "embeddings": seen.pop("clustered", active),
        "generated_active": active,
        "active_per_chunk": active / args.chunks,
        "speakers_simulated": args.speakers,
        "threads": args.threads,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak,
        "peak_increase_bytes": peak - rss_before,
        "peak_reset": reset,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        **phases,
        **seen,
        "clusters_found": int(centroids.shape[0]),
        "assigned_pairs": int((hard_clusters >= 0).sum()),
    }


# ------------------------------------------------------------------------------------------ orchestrator


def _available_bytes() -> int:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def parse_count(text: str) -> int:
    """``2000``, ``2k``, ``1.5k`` → embeddings."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(k)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (examples: 2000, 2k, 1.5k)")
    return round(float(match.group(1)) * (1000 if match.group(2) else 1))


def predicted_bytes(embeddings: float, linkage: str) -> float:
    """What a worker will add, for the skip rule: scipy's two condensed matrices, or fastcluster's vectors
    (a generous 16 kB per embedding; measured ~9 kB)."""
    return BYTES_PER_N2 * embeddings**2 if linkage == "scipy" else 16_000 * embeddings


def run_size(audio_seconds: float, threads: int, linkage: str, args: argparse.Namespace) -> dict[str, Any]:
    chunks = num_chunks(audio_seconds)
    predicted = predicted_bytes(chunks * args.active_per_chunk, linkage)
    row: dict[str, Any] = {"audio_seconds": audio_seconds, "chunks": chunks, "threads": threads, "linkage": linkage}
    cap = min(0.6 * _available_bytes(), args.max_extra_gib * 2**30)
    if predicted > cap:
        return {**row, "skipped": f"predicted {predicted / 2**30:.1f} GiB > {cap / 2**30:.1f} GiB allowed"}
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--chunks",
        str(chunks),
        "--threads",
        str(threads),
        "--linkage",
        linkage,
        "--active-per-chunk",
        str(args.active_per_chunk),
        "--speakers",
        str(args.speakers),
        "--seed",
        str(args.seed),
    ]
    try:
        finished = subprocess.run(  # noqa: S603 - fixed argv: this script and numbers
            command, capture_output=True, text=True, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {**row, "skipped": f"killed after {args.timeout} s"}
    if finished.returncode != 0:
        return {**row, "skipped": f"worker failed ({finished.returncode}): {finished.stderr.strip()[-500:]}"}
    return {**row, **json.loads(finished.stdout.strip().splitlines()[-1])}


BYTES_PER_N2 = 8.0
"""pdist's condensed matrix (n(n-1)/2 float64) plus the copy scipy's ``fast_linkage`` works on."""


def fit(rows: list[dict[str, Any]], linkage: str) -> dict[str, float] | None:
    """Fits of one linkage's single-thread rows.

    scipy: peak bytes ≈ a·n² + b·n + c; ``free``: least squares of all three; ``pinned``: a = 8 (the two
    condensed float64 matrices alive at once in ``linkage(method="centroid")``), b = the largest
    (measured − 8·n²)/n, so that the estimate is at or above every row. vector: peak bytes ≈ b·n + c, free,
    and pinned b = the largest measured/n. Time: seconds ≈ k·n^p, least squares in log-log over rows with
    n ≥ 4,000 (below that, fixed costs dominate), on CPU seconds where the rows have them.
    """
    import numpy as np

    measured = [r for r in rows if "seconds" in r and r["threads"] == 1 and r["linkage"] == linkage]
    if len(measured) < 3:
        return None
    n = np.array([r["embeddings"] for r in measured], dtype=float)
    y = np.array([r["peak_increase_bytes"] for r in measured], dtype=float)
    t = np.array([r.get("cpu_seconds", r["seconds"]) for r in measured], dtype=float)
    if linkage == "scipy":
        (a, b, c), *_ = np.linalg.lstsq(np.stack([n**2, n, np.ones_like(n)], axis=1), y, rcond=None)
        result = {
            "free_a": float(a),
            "free_b": float(b),
            "free_c": float(c),
            "pinned_a": BYTES_PER_N2,
            "pinned_b": float(np.max((y - BYTES_PER_N2 * n**2) / n)),
        }
    else:
        (b, c), *_ = np.linalg.lstsq(np.stack([n, np.ones_like(n)], axis=1), y, rcond=None)
        result = {"free_a": 0.0, "free_b": float(b), "free_c": float(c), "pinned_a": 0.0}
        result["pinned_b"] = float(np.max(y / n))
    large = n >= 4000
    if large.sum() >= 2:
        p, log_k = np.polyfit(np.log(n[large]), np.log(t[large]), 1)
        result.update(time_exponent=float(p), time_k=float(np.exp(log_k)))
    return result


def markdown(rows: list[dict[str, Any]], fits: dict[str, dict[str, float] | None], machine: str, command: str) -> str:
    lines = [
        f"Machine: {machine}. Command: `{command}`.",
        "",
        "| Linkage | Audio | Chunks | Embeddings n | AHC clusters | Threads | Peak RSS increase (MiB) | 8·n² (MiB)"
        " | Seconds | CPU seconds | of which linkage | VBx |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "seconds" not in r:
            lines.append(
                f"| {r['linkage']} | {label(r['audio_seconds'])} | {r['chunks']:,} | | | {r['threads']} "
                f"| {r['skipped']} | | | | | |"
            )
            continue
        lines.append(
            f"| {r['linkage']} | {label(r['audio_seconds'])} | {r['chunks']:,} | {r['embeddings']:,} "
            f"| {r.get('ahc_clusters', '')} | {r['threads']} | {r['peak_increase_bytes'] / 2**20:,.0f} "
            f"| {8 * r['embeddings'] ** 2 / 2**20:,.0f} | {r['seconds']:.1f} "
            f"| {r.get('cpu_seconds', r['seconds']):.1f} "
            f"| {r.get('linkage_seconds', 0):.1f} "
            f"| {r.get('vbx_seconds', 0):.1f} |"
        )
    for linkage, fitted in fits.items():
        if not fitted:
            continue
        lines += [
            "",
            f"{linkage}, free fit (1 thread): peak bytes ≈ {fitted['free_a']:.3f}·n² + {fitted['free_b']:,.0f}·n "
            f"{fitted['free_c'] / 2**20:+,.1f} MiB. Pinned: {fitted['pinned_a']:g}·n² + {fitted['pinned_b']:,.0f}·n "
            "(a = two float64 condensed matrices for scipy, none for vector; b = envelope of the rows).",
        ]
        if "time_exponent" in fitted:
            lines.append(f"{linkage}, time: seconds ≈ {fitted['time_k']:.3g}·n^{fitted['time_exponent']:.2f}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes_group = parser.add_mutually_exclusive_group()
    sizes_group.add_argument("--sizes", default=None, help="audio lengths, e.g. 10min,1h,2h")
    sizes_group.add_argument(
        "--embeddings", default=None, help=f"embedding counts n, e.g. 2k,8k (the default: {DEFAULT_EMBEDDINGS})"
    )
    parser.add_argument(
        "--linkage", choices=("scipy", "vector", "both"), default="both", help="scipy's linkage, fastcluster's, or both"
    )
    parser.add_argument("--two-threads", default="", help="one audio length also measured at 2 threads")
    parser.add_argument("--active-per-chunk", type=float, default=2.5, help="mean active speakers per chunk (1–3)")
    parser.add_argument("--speakers", type=int, default=6, help="global speakers in the synthetic meeting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=1200, help="seconds before a worker is killed")
    parser.add_argument(
        "--max-extra-gib", type=float, default=6.0, help="skip a size whose predicted increase exceeds this"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the raw numbers here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--chunks", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1.0 <= args.active_per_chunk <= LOCAL_SPEAKERS:
        parser.error("--active-per-chunk must be within 1–3")
    if args.speakers <= LOCAL_SPEAKERS:
        parser.error("--speakers must exceed 3 (turn changes pick a speaker not already in the chunk)")

    if args.worker:
        if args.linkage == "both":
            parser.error("a worker measures one linkage")
        print(json.dumps(worker(args)))
        return

    if args.sizes:
        sizes = [parse_duration(s) for s in args.sizes.split(",") if s.strip()]
    else:
        counts = [parse_count(s) for s in (args.embeddings or DEFAULT_EMBEDDINGS).split(",") if s.strip()]
        sizes = [audio_seconds_for(count, args.active_per_chunk) for count in counts]
    linkages = ["scipy", "vector"] if args.linkage == "both" else [args.linkage]
    rows: list[dict[str, Any]] = []
    for seconds in sizes:
        for linkage in linkages:
            rows.append(run_size(seconds, 1, linkage, args))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.two_threads:
        for linkage in linkages:
            rows.append(run_size(parse_duration(args.two_threads), 2, linkage, args))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    fits = {linkage: fit(rows, linkage) for linkage in linkages}
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    command = "python bench/clustering_memory.py " + " ".join(sys.argv[1:])
    table = markdown(rows, fits, machine, command.strip())
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine, "command": command.strip(), "rows": rows, "fits": fits}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
