"""Memory capacity guard: predict the peak memory of a diarization before running it.

pyannote's clustering (community-1: ``VBxClustering``; the real-weights pipeline: ``AgglomerativeClustering``) starts
with centroid linkage over every active (10 s chunk, local speaker) embedding. scipy's ``linkage`` computes the
condensed distance matrix, ``n(n-1)/2`` float64, and ``fast_linkage`` works on a copy of it: about ``8·n²`` bytes
alive at once, more than a Lambda function's 10,240 MB for 4 hours of audio. The loader therefore routes centroid
linkage on :data:`VECTOR_LINKAGE_MIN_EMBEDDINGS` or more embeddings to fastcluster's ``linkage_vector``, which
gives the same dendrogram in O(n·d) memory (:mod:`diarization.core.linkage`). The estimate follows the same switch:
8·n² below it, linear above it. With the quadratic term gone, pyannote's reconstruction (a ``(chunks, 589,
clusters)`` float64 array, made twice) can be the larger peak on long files, so the estimate takes the larger of
the two. An out-of-memory kill leaves no error object: :func:`check_memory` refuses a file that would not fit
beforehand with :class:`~diarization.errors.AudioTooLongForMemoryError`.

The constants below were measured with ``python bench/clustering_memory.py`` (pyannote 4.0.7, scipy 1.17.1,
fastcluster 1.3.0, numpy 2.4.6; each size in a fresh process) and fitted as described in docs/CAPACITY.md.
Estimates are deliberately high: every chunk is assumed to hold 3 active speakers (a busy meeting has about 2.5),
the n² coefficient is the allocation's exact 8 bytes (a free least-squares fit gave 7.5 and would under-predict
beyond the measured range), the linear coefficients are rounded up from the largest measured residual with room
for more AHC clusters than the measurements had, and only :data:`USABLE_FRACTION` of the limit is considered usable.

Core module: no AWS import, no torch import.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diarization.errors import AudioTooLongForMemoryError

CHUNK_SECONDS = 10.0
"""community-1's segmentation window."""
STEP_SECONDS = 1.0
"""community-1's window step: 10 % of the window (``segmentation_step=0.1``)."""
LOCAL_SPEAKERS = 3
"""Local speakers per chunk (segmentation-3.0's powerset output): the most embeddings one chunk can add."""
WORST_CASE_ACTIVE_SPEAKERS_PER_CHUNK = 3.0
"""The estimate's default: every local speaker of every chunk counts as an embedding to cluster."""

VECTOR_LINKAGE_MIN_EMBEDDINGS = 10_000
""":data:`diarization.core.linkage.VECTOR_LINKAGE_MIN_EMBEDDINGS`, repeated here because this module imports no pyannote
(a test holds them equal): from this many embeddings on, centroid linkage needs no n² memory."""

# scipy's linkage (below the switch). Fitted from `python bench/clustering_memory.py` (docs/CAPACITY.md has the
# tables, the machine and the fit): measured peak RSS increase of VBxClustering.__call__ for n = 1,482 / 4,488 /
# 9,002 / 17,981 embeddings: 23 / 173 / 655 / 2,502 MiB (two runs agree within 40 MiB); (measured - 8·n²)/n ≤ 4,442
# bytes in every row.
CLUSTERING_BYTES_PER_EMBEDDING_SQUARED = 8.0
"""pdist's condensed matrix plus ``fast_linkage``'s copy: 2 × n(n-1)/2 × 8 bytes (8·n² is 2,467 MiB at
n = 17,981; measured 2,464 and 2,502 MiB). A free least-squares fit gave 7.5–7.7."""
CLUSTERING_BYTES_PER_EMBEDDING = 6_000
"""Linear part (float64 copies of the 256-dim embeddings, filter_embeddings' temporaries, VBx's
responsibilities); the measured envelope was 4,442 bytes."""
CLUSTERING_BYTES_CONSTANT = 16 * 2**20
"""Fixed part (small arrays, allocator granularity); the free fits' constants were negative."""

VECTOR_CLUSTERING_BYTES_PER_EMBEDDING = 20_480
"""fastcluster's linkage (from the switch on) and the rest of the clustering: measured 7.8–9.7 kB per embedding
(n = 2,012 to 32,038); the vectors as float64 plus fastcluster's (2n−1)-row centroid array are ~6 kB of it. Doubled
from the measured envelope to cover VBx's n × K float64 arrays (about 40·K bytes per embedding) for K up to ~250
AHC clusters; the measurements had 8–47."""

# Time of the whole VBxClustering.__call__, single-threaded (both linkages are), on the shared 2-core AMD EPYC VM.
# scipy: the slower of two earlier wall-clock runs, 2.1 / 10.0 / 77.4 s at n = 4,488 / 9,002 / 17,981, fitted as
# seconds ≈ K · n^P over n ≥ 4,000 (CPU seconds later: 1.4 / 7.2 / 42.1 at 4,003 / 8,017 / 16,005, below the fit).
# fastcluster: CPU seconds (the machine was loaded; wall clock was up to 8 times more) 3.5 / 16.4 / 69.2 / 278.9 at
# n = 4,003 / 8,017 / 16,005 / 32,038, least squares in log-log (exponent 2.10; 2.01 between the last two, so the
# fit errs high when extrapolated).
CLUSTERING_SECONDS_K = 6.25e-10
CLUSTERING_SECONDS_EXPONENT = 2.6
VECTOR_CLUSTERING_SECONDS_K = 1.01e-7
VECTOR_CLUSTERING_SECONDS_EXPONENT = 2.1

PIPELINE_BYTES_PER_CHUNK = 16_384
"""pyannote's per-chunk arrays alive while it clusters: segmentation (589 frames × 3 float32, 7,068 bytes),
embeddings (3 × 256 float32, 3,072 bytes), plus rounding for their transient copies. Computed, not measured."""
FRAMES_PER_CHUNK = 589
"""segmentation-3.0's output frames per 10 s chunk."""
RECONSTRUCTION_CLUSTERS = 20
"""Speakers assumed when sizing the reconstruction: pyannote allocates ``(chunks, 589, clusters)`` float64 for the
clustered segmentations (``np.nan * np.zeros(...)``: two such arrays at once). The number of clusters is only known
after clustering; 20 is more than a meeting has, and a ``max_speakers`` hint bounds it."""
RECONSTRUCTION_BYTES_PER_CHUNK_AND_CLUSTER = 2 * FRAMES_PER_CHUNK * 8
"""Two float64 ``(589,)`` rows per chunk and cluster (9,424 bytes): 2.7 GiB for 4 h at 20 clusters. Computed from
pyannote's ``reconstruct``, not measured; it runs after clustering has freed its memory, hence the max() below."""
RETAINED_INFERENCE_BYTES = 256 * 2**20
"""Memory the allocator still holds from segmentation and embedding inference when clustering starts:
78 MiB measured, its 7.7 MB waveform included (production architecture, fast embedding path, 2 threads,
2 min of audio), rounded up."""
WAVEFORM_BYTES_PER_SECOND = 16_000 * 4
"""The decoded waveform (16 kHz mono float32). Part of ``baseline_bytes`` when the check runs after decoding;
add it yourself when checking before."""
USABLE_FRACTION = 0.95
"""Share of the limit the estimate may use: the rest is left to the runtime, extensions and page tables."""


def num_chunks(audio_seconds: float) -> int:
    """Chunks pyannote's sliding window makes: every full window at each step, plus a padded last one."""
    if audio_seconds <= CHUNK_SECONDS:
        return 1
    return math.ceil((audio_seconds - CHUNK_SECONDS) / STEP_SECONDS) + 1


def num_embeddings(
    audio_seconds: float, active_speakers_per_chunk: float = WORST_CASE_ACTIVE_SPEAKERS_PER_CHUNK
) -> int:
    """Embeddings clustered: active (chunk, local speaker) pairs, at most 3 per chunk."""
    if not 0.0 <= active_speakers_per_chunk <= LOCAL_SPEAKERS:
        raise ValueError(
            f"active_speakers_per_chunk must be within 0–{LOCAL_SPEAKERS}, not {active_speakers_per_chunk}"
        )
    return math.ceil(num_chunks(audio_seconds) * active_speakers_per_chunk)


def clustering_bytes_for_embeddings(n: int) -> int:
    """Peak RSS increase of pyannote's clustering over ``n`` embeddings: scipy's fitted curve below
    :data:`VECTOR_LINKAGE_MIN_EMBEDDINGS`, fastcluster's from it on, but never less than scipy's just below the
    switch. That floor keeps the estimate non-decreasing in ``n`` (so a longer file never looks cheaper and
    :func:`max_audio_seconds` is a true boundary); it only over-estimates files just past the switch (up to ~42,000
    embeddings) by at most ~0.7 GiB."""
    if n < 2:  # pyannote does not cluster fewer than 2 embeddings
        return CLUSTERING_BYTES_CONSTANT
    if n >= VECTOR_LINKAGE_MIN_EMBEDDINGS:
        vector = math.ceil(VECTOR_CLUSTERING_BYTES_PER_EMBEDDING * n + CLUSTERING_BYTES_CONSTANT)
        return max(vector, _scipy_clustering_bytes(VECTOR_LINKAGE_MIN_EMBEDDINGS - 1))
    return _scipy_clustering_bytes(n)


def _scipy_clustering_bytes(n: int) -> int:
    return math.ceil(
        CLUSTERING_BYTES_PER_EMBEDDING_SQUARED * n * n + CLUSTERING_BYTES_PER_EMBEDDING * n + CLUSTERING_BYTES_CONSTANT
    )


def reconstruction_bytes(audio_seconds: float, clusters: int = RECONSTRUCTION_CLUSTERS) -> int:
    """Peak that pyannote's ``reconstruct`` adds: the clustered segmentations of every chunk, twice."""
    return RECONSTRUCTION_BYTES_PER_CHUNK_AND_CLUSTER * clusters * num_chunks(audio_seconds)


def estimate_clustering_bytes(
    audio_seconds: float, active_speakers_per_chunk: float = WORST_CASE_ACTIVE_SPEAKERS_PER_CHUNK
) -> int:
    """Peak memory that clustering adds for ``audio_seconds`` of audio; by default at 3 speakers per chunk."""
    return clustering_bytes_for_embeddings(num_embeddings(audio_seconds, active_speakers_per_chunk))


def clustering_seconds_for_embeddings(n: int) -> float:
    """Indicative single-threaded time of pyannote's clustering over ``n`` embeddings on the measuring machine."""
    if n < 2:
        return 0.0
    if n >= VECTOR_LINKAGE_MIN_EMBEDDINGS:
        return float(VECTOR_CLUSTERING_SECONDS_K * n**VECTOR_CLUSTERING_SECONDS_EXPONENT)
    return float(CLUSTERING_SECONDS_K * n**CLUSTERING_SECONDS_EXPONENT)


def estimate_clustering_seconds(
    audio_seconds: float, active_speakers_per_chunk: float = WORST_CASE_ACTIVE_SPEAKERS_PER_CHUNK
) -> float:
    """Indicative single-threaded clustering time on the measuring machine (see the caveats in CAPACITY.md).

    It grows faster than the audio, so a deadline estimate proportional to the duration misses it on long files.
    """
    return clustering_seconds_for_embeddings(num_embeddings(audio_seconds, active_speakers_per_chunk))


def max_audio_seconds_for_clustering_time(
    budget_seconds: float, active_speakers_per_chunk: float = WORST_CASE_ACTIVE_SPEAKERS_PER_CHUNK
) -> float:
    """The longest audio (whole seconds) whose estimated clustering time fits ``budget_seconds`` on the measuring
    machine's cores: the bound that time, not memory, puts on one process (e.g. the fan-out's reduce, whose Lambda
    invocation has 900 s for clustering and everything else)."""

    def fits(seconds: int) -> bool:
        return estimate_clustering_seconds(seconds, active_speakers_per_chunk) <= budget_seconds

    return _longest(fits)


def estimate_peak_bytes(
    audio_seconds: float,
    baseline_bytes: int,
    active_speakers_per_chunk: float = WORST_CASE_ACTIVE_SPEAKERS_PER_CHUNK,
) -> int:
    """The process's peak while pyannote clusters and reconstructs: ``baseline_bytes`` (the process's RSS now, the
    loaded model and the decoded waveform included) plus what inference leaves behind plus the larger of clustering
    and reconstruction (one runs after the other has freed its memory)."""
    embeddings = num_embeddings(audio_seconds, active_speakers_per_chunk)
    return _peak(audio_seconds, baseline_bytes, clustering_bytes_for_embeddings(embeddings))


def _peak(audio_seconds: float, baseline_bytes: int, clustering_bytes: int) -> int:
    return (
        baseline_bytes
        + RETAINED_INFERENCE_BYTES
        + PIPELINE_BYTES_PER_CHUNK * num_chunks(audio_seconds)
        + max(clustering_bytes, reconstruction_bytes(audio_seconds))
    )


def max_audio_seconds(
    memory_limit_bytes: int,
    baseline_bytes: int,
    active_speakers_per_chunk: float = WORST_CASE_ACTIVE_SPEAKERS_PER_CHUNK,
) -> float:
    """The longest audio (whole seconds) whose estimate fits ``USABLE_FRACTION`` of the limit; 0 if none does."""
    usable = memory_limit_bytes * USABLE_FRACTION

    def fits(seconds: float) -> bool:
        return estimate_peak_bytes(seconds, baseline_bytes, active_speakers_per_chunk) <= usable

    if not fits(0.0):
        return 0.0
    return _longest(fits)


def _longest(fits: Callable[[int], bool]) -> float:
    """The largest whole number of seconds for which ``fits`` (monotone: true up to a length, false beyond) holds:
    doubling from an hour, then bisection."""
    low, high = 0, 3600
    while fits(high):
        low, high = high, high * 2
        if high > 10**9:
            return float(low)
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return float(low)


def clustered_embeddings(segmentations: Any) -> int:
    """The embeddings pyannote will cluster, counted from its binarized segmentation
    (``(num_chunks, num_frames, 3)``, a ``SlidingWindowFeature`` or an array) as ``filter_embeddings`` selects
    them: a local speaker with at least 20 % of the chunk's frames to itself. For a second, exact check after
    segmentation (e.g. from the pipeline's ``hook("segmentation", ...)``), before the embeddings are computed."""
    import numpy as np

    data = np.asarray(getattr(segmentations, "data", segmentations))
    if data.ndim != 3:
        raise ValueError(f"expected (chunks, frames, speakers) segmentations, got shape {data.shape}")
    single = np.sum(data, axis=2, keepdims=True) == 1
    clean_frames = np.sum(data * single, axis=1)
    return int(np.count_nonzero(clean_frames >= 0.2 * data.shape[1]))


def check_memory(
    audio_seconds: float, memory_limit_bytes: int, baseline_bytes: int, *, embeddings: int | None = None
) -> None:
    """Raise :class:`AudioTooLongForMemoryError` when diarizing ``audio_seconds`` would not fit in memory.

    ``memory_limit_bytes``: what the process may use (:func:`memory_limit_bytes` reads it). ``baseline_bytes``:
    the process's RSS when this runs (:func:`current_rss_bytes`), best right after decoding. For a decision that
    is the same on every container, pass a fixed figure instead (e.g. the RSS measured once after loading the
    pipeline, plus :data:`WAVEFORM_BYTES_PER_SECOND` × ``audio_seconds``). ``embeddings``: the exact count
    (:func:`clustered_embeddings`) once the segmentation is known; without it, the worst case of 3 per chunk.
    """
    if embeddings is None:
        estimated = estimate_peak_bytes(audio_seconds, baseline_bytes)
    else:
        estimated = _peak(audio_seconds, baseline_bytes, clustering_bytes_for_embeddings(embeddings))
    if estimated <= memory_limit_bytes * USABLE_FRACTION:
        return
    longest = max_audio_seconds(memory_limit_bytes, baseline_bytes)
    gib = 2**30
    raise AudioTooLongForMemoryError(
        f"{_duration(audio_seconds)} of audio would need about {estimated / gib:.1f} GiB of memory at its peak "
        f"(pyannote's clustering and reconstruction grow with the length), more than the "
        f"{memory_limit_bytes / gib:.1f} GiB this function has. Send it to the GPU endpoint (more memory), split it "
        f"into parts no longer than {_duration(longest)}, or give the function more memory (Lambda allows up to "
        f"10,240 MB).",
        audio_seconds=round(audio_seconds, 3),
        estimated_bytes=estimated,
        limit_bytes=memory_limit_bytes,
        baseline_bytes=baseline_bytes,
        max_audio_seconds=longest,
    )


def memory_limit_bytes(
    env: Mapping[str, str] | None = None,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    meminfo: Path = Path("/proc/meminfo"),
) -> int | None:
    """The memory this process may use: Lambda's ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` (MB, i.e. MiB), else the
    cgroup limit (v2 ``memory.max``, v1 ``memory/memory.limit_in_bytes``), else the machine's ``MemTotal``
    (e.g. a SageMaker instance); None when none of them is known."""
    env = os.environ if env is None else env
    size = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "").strip()
    if size.isdigit() and int(size) > 0:
        return int(size) * 2**20
    for path in (cgroup_root / "memory.max", cgroup_root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < 2**60:  # v1 reports "no limit" as a huge number
            return int(text)
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return None


def current_rss_bytes() -> int | None:
    """This process's resident memory now (Linux ``/proc/self/statm``); None where unavailable."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


@dataclass(frozen=True)
class MemoryBudget:
    """The memory a host may use, and how to read what is in use when a file is checked (right after decoding,
    so the loaded model and the waveform are part of it)."""

    limit_bytes: int
    in_use: Callable[[], int | None] = current_rss_bytes

    def check(self, audio_seconds: float) -> None:
        """Raise :class:`AudioTooLongForMemoryError` when ``audio_seconds`` would not fit; no check where the
        memory in use cannot be read (not Linux)."""
        baseline = self.in_use()
        if baseline is not None:
            check_memory(audio_seconds, self.limit_bytes, baseline)

    @classmethod
    def of_this_process(cls, env: Mapping[str, str] | None = None) -> MemoryBudget | None:
        """From :func:`memory_limit_bytes`; None when no limit is known."""
        limit = memory_limit_bytes(env)
        return None if limit is None else cls(limit)


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
