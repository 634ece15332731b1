"""The fan-out plan: pyannote's own sliding-window grid, cut into contiguous ranges of chunk indices.

pyannote's segmentation slides a window of ``W`` samples by ``S`` samples (``Inference.slide``): chunk ``i`` covers
samples ``[i·S, i·S + W)`` for every full window, and when the audio does not end on the grid one more chunk starts
at ``full·S`` and is zero-padded to ``W``. Segmentation and embeddings of a chunk depend only on its own samples, so
a shard ``[first, stop)`` needs only samples ``[first·S, (stop-1)·S + W)`` (to the end of the audio for the shard
holding the padded chunk), and running pyannote's own code on exactly that slice reproduces the chunks' outputs.

Shard boundaries are multiples of both batch sizes (segmentation and embedding, chunks or chunk-speaker pairs): each
shard's batches are then the single-process run's batches, not just the same chunks in other company, so the same
kernels see the same inputs and the outputs are bit-for-bit the single run's on a given machine.

The staged input is the decoded audio (16 kHz mono float32, little-endian, no header) so a shard reads its samples
with one ranged GET of ``[4·start, 4·stop)`` bytes, never the whole file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

SAMPLE_BYTES = 4
"""Staged audio is float32: the decoder's output, bit for bit."""
AUDIO_OBJECT = "audio.f32"
AUDIO_FACTS_OBJECT = "audio.json"
RESULT_OBJECT = "result.json"
FAILURE_OBJECT = "failure.json"


def shard_object(index: int) -> str:
    """A shard's intermediate object (segmentations and embeddings), relative to the execution's work prefix."""
    return f"shards/{index:05d}.npz"


@dataclass(frozen=True)
class ShardRange:
    """Chunks ``[first_chunk, stop_chunk)`` and the samples ``[sample_start, sample_stop)`` they read."""

    index: int
    first_chunk: int
    stop_chunk: int
    sample_start: int
    sample_stop: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ShardRange:
        return cls(*(int(body[name]) for name in ("index", "first_chunk", "stop_chunk", "sample_start", "sample_stop")))


@dataclass(frozen=True)
class Grid:
    """pyannote's sliding window over one file, in samples."""

    num_samples: int
    window: int
    step: int

    @property
    def full_chunks(self) -> int:
        return 0 if self.num_samples < self.window else (self.num_samples - self.window) // self.step + 1

    @property
    def has_padded_chunk(self) -> bool:
        return self.num_samples < self.window or (self.num_samples - self.window) % self.step > 0

    @property
    def num_chunks(self) -> int:
        return self.full_chunks + int(self.has_padded_chunk)

    def samples_for(self, first: int, stop: int) -> tuple[int, int]:
        """The samples chunks ``[first, stop)`` read (the padded chunk reads to the end of the audio)."""
        if not 0 <= first < stop <= self.num_chunks:
            raise ValueError(f"chunks [{first}, {stop}) are not within [0, {self.num_chunks})")
        end = self.num_samples if stop > self.full_chunks else (stop - 1) * self.step + self.window
        return first * self.step, end


def plan_shards(grid: Grid, chunks_per_shard: int, alignment: int) -> tuple[ShardRange, ...]:
    """Contiguous shards of about ``chunks_per_shard`` chunks, each starting on a multiple of ``alignment`` (the
    batch sizes' least common multiple, see :func:`batch_alignment`); the last one takes the remainder."""
    if chunks_per_shard < 1 or alignment < 1:
        raise ValueError("chunks_per_shard and alignment must be positive")
    size = max(alignment, (chunks_per_shard // alignment) * alignment)
    shards = []
    for index, first in enumerate(range(0, grid.num_chunks, size)):
        stop = min(first + size, grid.num_chunks)
        shards.append(ShardRange(index, first, stop, *grid.samples_for(first, stop)))
    return tuple(shards)


def batch_alignment(segmentation_batch_size: int, embedding_batch_size: int) -> int:
    """Chunks per alignment step: a multiple of both batch sizes (pyannote's own embedding loop batches
    (chunk, speaker) pairs; a multiple of its batch size in chunks keeps those batches too)."""
    return math.lcm(max(1, segmentation_batch_size), max(1, embedding_batch_size))
