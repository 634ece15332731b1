"""``make bench``: upstream pyannote.audio vs this project's path, side by side, into docs/BENCHMARKS.md.

Every row runs in its own process (``bench/measure.py``) so cold start and peak RSS are that
row's alone; rows alternate upstream/fast/fast-bf16 for each (audio, threads) so all see the
same machine load. Audio: pyannote's 30 s sample, and 10- and 60-minute files made by repeating it
(real speech everywhere: the embedding step's worst case). Weights: the production-architecture
offline pipeline (same compute as the pretrained models). The page is rewritten after every row,
so an interrupted run still leaves what it measured.

``--append`` adds a later run's rows to the last results.json: the whole matrix takes longer than one
session on this machine (upstream's defaults alone need about two hours for 60 minutes of audio).
Every row carries its run's number, and rows are only ever compared with rows of the same run.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"30s": 0, "10min": 600, "60min": 3600}
"""Audio lengths; 0 means the sample itself."""
PATHS = ("upstream", "upstream-batch32", "fast", "fast-bf16")
"""See bench/measure.py; ``upstream`` (batch 1) and ``upstream-batch32`` (community-1's config.yaml) are baselines."""
BASELINES = ("upstream", "upstream-batch32")
CANDIDATES = ("fast", "fast-bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=ROOT / ".models" / "offline-production")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".bench", help="generated audio and row artifacts")
    parser.add_argument("--sizes", default="30s,10min,60min", help="comma-separated: " + ", ".join(SIZES))
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated: " + ", ".join(PATHS))
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATH:SIZE:THREADS",
        help="run just these rows, in this order (e.g. fast:60min:2); repeatable; overrides the matrix",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--render", action="store_true", help="only rewrite the page from the last run's results.json")
    parser.add_argument(
        "--append", action="store_true", help="add this run's rows to results.json's as a further run (own pairs)"
    )
    args = parser.parse_args()

    results_file = args.work_dir / "results.json"
    if args.render:
        run = json.loads(results_file.read_text())
        args.output.write_text(render(run))
        return
    rows = _planned_rows(args)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    facts = {
        "started": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        "commit": _commit(),
        "model_dir": str(args.model_dir),
    }
    run = open_run(results_file if args.append else None, facts)
    number = len(run.get("appended", []))
    results: list[dict[str, Any]] = run["rows"]
    for path, size, threads in rows:
        audio = _audio(args.work_dir, size)
        artifacts = args.work_dir / (f"{path}-{size}-{threads}t" + (f"-run{number}" if number else ""))
        print(f"bench: {path} {size} {threads} thread(s) ...", file=sys.stderr, flush=True)
        row = _measure(path, audio, args.model_dir, threads, artifacts)
        row["size"] = size
        row["run"] = number
        row["artifacts"] = str(artifacts)
        results.append(row)
        print(
            f"bench: {path} {size} {threads}t: diarize {row['diarize_seconds']:.1f} s, "
            f"RTF {row['real_time_factor']:.3f}",
            file=sys.stderr,
            flush=True,
        )
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(render(run))
        results_file.write_text(json.dumps(run, indent=1))


def open_run(earlier: Path | None, facts: dict[str, str]) -> dict[str, Any]:
    """A new run's record, or ``earlier``'s results.json with this run added to its ``appended`` list.

    The new rows go into the same ``rows`` list, tagged with the run's number (its index in
    ``[first, *appended]``) so that pairs never straddle runs.
    """
    if earlier is None or not earlier.exists():
        return {**facts, "rows": []}
    record: dict[str, Any] = json.loads(earlier.read_text())
    return {**record, "appended": [*record.get("appended", []), facts]}


def _planned_rows(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    if args.only:
        rows = []
        for spec in args.only:
            path, size, threads = spec.split(":")
            rows.append((_check(path, PATHS), _check(size, tuple(SIZES)), int(threads)))
        return rows
    paths = [_check(p, PATHS) for p in args.paths.split(",")]
    sizes = [_check(s, tuple(SIZES)) for s in args.sizes.split(",")]
    return [(path, size, int(t)) for size in sizes for t in args.threads.split(",") for path in paths]


def _check(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SystemExit(f"bench: {value!r} is not one of {', '.join(allowed)}")
    return value


def _audio(work_dir: Path, size: str) -> Path:
    """The sample, or the sample repeated to ``size`` as 16 kHz 16-bit WAV (made once)."""
    sys.path.insert(0, str(ROOT))
    from infra.media import read_wav, sample_wav

    seconds = SIZES[size]
    if seconds == 0:
        return sample_wav()
    path = work_dir / f"speech-{size}.wav"
    if not path.exists():
        samples, rate = read_wav(sample_wav())
        repeats = -(-seconds * rate // len(samples))
        tiled = np.tile(samples, repeats)[: seconds * rate]
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes((np.clip(tiled, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _measure(path: str, audio: Path, model_dir: Path, threads: int, artifacts: Path) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [
        sys.executable,
        str(ROOT / "bench" / "measure.py"),
        "--path",
        path,
        "--audio",
        str(audio),
        "--model-dir",
        str(model_dir),
        "--threads",
        str(threads),
        "--artifacts",
        str(artifacts),
    ]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
    if finished.returncode != 0:
        raise SystemExit(f"bench: {' '.join(command)} failed:\n{finished.stderr[-4000:]}")
    row: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    return row


def _pairs(
    results: list[dict[str, Any]], baseline: str = "upstream", candidate: str = "fast"
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(baseline row, candidate row) of the same audio, threads and run: rows of different runs never pair."""
    base = {_slot(r): r for r in results if r["path"] == baseline}
    return [(base[_slot(r)], r) for r in results if r["path"] == candidate and _slot(r) in base]


def _slot(row: dict[str, Any]) -> tuple[int, str, int]:
    return row.get("run", 0), row["size"], row["threads"]


def _runs(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The first run (the file's own facts) and any added by ``--append``, numbered from 1 on the page."""
    return [run, *run.get("appended", [])]


def _equivalence(up: dict[str, Any], fast: dict[str, Any]) -> tuple[float, float, bool]:
    """Largest absolute embedding difference, smallest cosine, identical RTTM."""
    a, b = np.load(up["artifacts"] + ".npy"), np.load(fast["artifacts"] + ".npy")
    rttm_equal = Path(up["artifacts"] + ".rttm").read_text() == Path(fast["artifacts"] + ".rttm").read_text()
    flat_a, flat_b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    valid = np.isfinite(flat_a).all(axis=1) & np.isfinite(flat_b).all(axis=1)
    x, y = flat_a[valid].astype(np.float64), flat_b[valid].astype(np.float64)
    cosine = float(((x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))).min()) if len(x) else 1.0
    return float(np.nanmax(np.abs(a - b))), cosine, rttm_equal


def render(run: dict[str, Any]) -> str:
    """The Markdown page: per-row table, side-by-side ratios, the issue's targets, machine facts."""
    results: list[dict[str, Any]] = run["rows"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/run.py`); do not edit by hand. "
        "Every row is a fresh process; upstream, fast (fp32 trunk) and fast-bf16 (bf16 trunk) rows alternate on "
        "the same audio and weights.",
        "",
        "## Rows",
        "",
        "| run | path | audio | threads | import torch s | import pyannote s | load s | cold start s | decode s "
        "| segmentation s | embedding s | clustering s | diarize s | RTF | peak RSS MiB | user+sys CPU s | speakers |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.get('run', 0) + 1} | {r['path']} | {r['size']} | {r['threads']} | {r['import_torch_seconds']:.2f} "
            f"| {r['import_pyannote_seconds']:.2f} | {r['load_seconds']:.2f} | {r['cold_start_seconds']:.2f} "
            f"| {r['decode_seconds']:.2f} | {r['segmentation_seconds']:.1f} | {r['embedding_seconds']:.1f} "
            f"| {r['clustering_seconds']:.1f} | {r['diarize_seconds']:.1f} | {r['real_time_factor']:.3f} "
            f"| {r['peak_rss_bytes'] / 2**20:.0f} | {r['cpu_user_seconds']:.0f}+{r['cpu_system_seconds']:.0f} "
            f"| {r['speakers']} |"
        )
    for baseline in BASELINES:
        for candidate in CANDIDATES:
            pairs = _pairs(results, baseline, candidate)
            if pairs:
                lines += _ratio_table(baseline, candidate, pairs)
    bf16_pairs = _pairs(results, "fast", "fast-bf16")
    if bf16_pairs:
        lines += _ratio_table("fast", "fast-bf16", bf16_pairs)
    lines += ["", "## Targets", ""] + [f"- {verdict}" for verdict in _targets(results)]
    lines += ["", "Why the unmet ones are where they are: [PERFORMANCE.md](PERFORMANCE.md)."]
    lines += ["", "## Machine and software", ""] + [f"- {fact}" for fact in _machine_facts(run)] + [""]
    return "\n".join(lines)


def _ratio_table(baseline: str, candidate: str, pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    lines = [
        "",
        f"## {candidate} vs {baseline}, same run",
        "",
        f"Ratios are {baseline} ÷ {candidate} (higher is better for {candidate}), except cold start and RSS "
        f"({candidate} ÷ {baseline}).",
        "",
        "| run | audio | threads | diarize × | embedding × | cold start | peak RSS | peak RSS MiB "
        "| max abs embedding difference | min embedding cosine | RTTM identical |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for up, fast in pairs:
        difference, cosine, rttm_equal = _equivalence(up, fast)
        lines.append(
            f"| {fast.get('run', 0) + 1} | {fast['size']} | {fast['threads']} "
            f"| {up['diarize_seconds'] / fast['diarize_seconds']:.2f} "
            f"| {up['embedding_seconds'] / fast['embedding_seconds']:.2f} "
            f"| {fast['cold_start_seconds'] / up['cold_start_seconds']:.0%} "
            f"| {fast['peak_rss_bytes'] / up['peak_rss_bytes']:.0%} | {fast['peak_rss_bytes'] / 2**20:.0f} "
            f"| {difference:.1e} | {cosine:.6f} | {'yes' if rttm_equal else 'NO'} |"
        )
    return lines


def _targets(results: list[dict[str, Any]]) -> list[str]:
    """The issues' targets, each judged on a pair of rows from one run (named, when measured)."""
    pairs = _pairs(results)
    verdicts = []
    for size in ("10min", "60min"):
        pair = next(((u, f) for u, f in pairs if f["size"] == size and f["threads"] == 2), None)
        if pair is None:
            verdicts.append(f"diarization ≥ 4× faster than upstream, {size}, 2 threads: not measured")
            continue
        ratio = pair[0]["diarize_seconds"] / pair[1]["diarize_seconds"]
        verdict = (
            f"diarization ≥ 4× faster than upstream, {size}, 2 threads: {ratio:.2f}× — {_verdict(ratio >= 4)}"
            f"{_which(pair[1])}"
        )
        batch32 = next((u for u, f in _pairs(results, "upstream-batch32") if f is pair[1]), None)
        if batch32 is not None:
            ratio32 = batch32["diarize_seconds"] / pair[1]["diarize_seconds"]
            verdict += f" (against upstream with embedding batch 32: {ratio32:.2f}×)"
        verdicts.append(verdict)
    if pairs:
        checks = [_equivalence(u, f) for u, f in pairs]
        worst = max(difference for difference, _, _ in checks)
        identical = all(rttm_equal for _, _, rttm_equal in checks)
        verdicts.append(
            f"embeddings within 1e-4 of upstream: largest difference {worst:.1e} — {_verdict(worst <= 1e-4)}"
        )
        verdicts.append(f"identical RTTM in every pair: {_verdict(identical)}")
        cold = max(f["cold_start_seconds"] / u["cold_start_seconds"] for u, f in pairs)
        verdicts.append(f"cold start ≤ 50 % of upstream's: worst pair {cold:.0%} — {_verdict(cold <= 0.5)}")
    verdicts += _bf16_targets(results)
    long_rows = [r for r in results if r["path"] in CANDIDATES and r["size"] == "60min"]
    if long_rows:
        peak = max(r["peak_rss_bytes"] for r in long_rows) / 1e9
        verdicts.append(f"peak RSS ≤ 1.5 GB for 60 minutes: {peak:.2f} GB — {_verdict(peak <= 1.5)}")
    else:
        verdicts.append("peak RSS ≤ 1.5 GB for 60 minutes: not measured")
    return verdicts


def _bf16_targets(results: list[dict[str, Any]]) -> list[str]:
    """Issue 14: the bf16 trunk ≥ 8× upstream's defaults (batch 32) at 2 threads, with the fp32 path's turns."""
    verdicts = []
    for size in ("10min", "60min"):
        pair = next(
            (
                (u, f)
                for u, f in _pairs(results, "upstream-batch32", "fast-bf16")
                if f["size"] == size and f["threads"] == 2
            ),
            None,
        )
        if pair is None:
            verdicts.append(f"bf16 ≥ 8× faster than upstream defaults, {size}, 2 threads: not measured")
            continue
        ratio = pair[0]["diarize_seconds"] / pair[1]["diarize_seconds"]
        verdicts.append(
            f"bf16 ≥ 8× faster than upstream defaults (batch 32), {size}, 2 threads: {ratio:.2f}× — "
            f"{_verdict(ratio >= 8)}{_which(pair[1])}"
        )
    same = _pairs(results, "fast", "fast-bf16")
    if same:
        identical = all(_equivalence(u, f)[2] for u, f in same)
        verdicts.append(f"bf16 turns identical to fp32's in every pair: {_verdict(identical)}")
    return verdicts


def _verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def _which(row: dict[str, Any]) -> str:
    return f" (run {row.get('run', 0) + 1})"


def _commit() -> str:
    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, cwd=ROOT, capture_output=True, text=True, check=False).stdout  # noqa: S603 - fixed argv
    return commit.strip() or "?"


def _machine_facts(run: dict[str, Any]) -> list[str]:
    import torch

    cpu = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    from importlib.metadata import version

    runs = []
    for number, each in enumerate(_runs(run), start=1):
        model_dir = Path(each["model_dir"])
        manifest = model_dir / "config.yaml"
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:12] if manifest.exists() else "?"
        runs.append(
            f"run {number} started {each['started']} at commit {each['commit']}; weights: production-architecture "
            f"offline pipeline {model_dir.name} (config.yaml sha256 {digest}), random weights with the pretrained "
            "models' compute"
        )
    return [
        *runs,
        f"CPU: {cpu}, {len(os.sched_getaffinity(0))} usable cores, {memory:.0f} GiB memory; {platform.platform()}",
        f"Python {platform.python_version()}, torch {torch.__version__}, pyannote.audio {version('pyannote.audio')}, "
        f"allocator: {os.environ.get('LD_PRELOAD') or 'glibc malloc'}",
        "audio: pyannote's 30 s sample; 10min and 60min repeat it (speech throughout)",
        "RTF = (decode + diarize) / audio duration; cold start = process start to loaded pipeline "
        "(import torch + import pyannote.audio + load)",
        "this machine is shared and noisy: compare rows of the same run, not across runs (ratios only pair rows of "
        "one run)",
    ]


if __name__ == "__main__":
    main()
