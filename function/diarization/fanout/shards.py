"""Shards and their reduce: pyannote's diarization split at the chunk level, with the single run's answer.

A shard runs pyannote's own segmentation (the pipeline's ``get_segmentations``) and its own embedding step (the
pipeline's ``get_embeddings``: :mod:`diarization.core.fastpath` or upstream, whichever the loaded pipeline uses) on the
samples of a contiguous range of chunks, and nothing else. The reduce concatenates the parts in chunk order and runs
pyannote's own ``apply`` with them injected in place of those two steps, so speaker counting, clustering (with the
speaker-count hints), reconstruction and the annotations are upstream's code, not a copy; the result is then built by
:meth:`Diarizer.diarize_with`, the one place a single-process result is built too.

Why the answer is the single run's, bit for bit on one machine:

- the grid: a shard's samples start on a chunk boundary (``first·step``) and pyannote slides its window from the
  shard's first sample, so its chunks are the file's chunks ``[first, stop)`` (checked: the count must match); the
  padded last chunk is padded the same way because a shard holding it reads to the end of the audio;
- the batches: shard boundaries are multiples of both batch sizes (:func:`~diarization.fanout.plan.batch_alignment`),
  so every batch holds the chunks (or chunk-speaker pairs) it holds in the single run and the same kernels see the
  same inputs; and pyannote's segmentation always runs the padded chunk on its own;
- the crops: the embedding step crops chunk ``i`` at ``i·step`` seconds of its input; a shard's ``i`` counts from
  its first chunk and its input starts there, and ``step`` (1 s for 10 s windows) times 16 kHz is an exact integer;
- everything after the embeddings sees the concatenation, which is the single run's arrays.

Limits: "identical" holds for one machine and library build (another CPU's kernels may round differently, as they
would for a single run). A model whose step in samples is not a whole number is refused (the crops would round
differently). Only the samples a shard covers are read, but every shard needs all the local models loaded.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from diarization.core.audio import SAMPLE_RATE
from diarization.core.engine import Diarizer, Prepared
from diarization.core.hints import SpeakerHints
from diarization.core.result import AudioFacts, DiarizationResult
from diarization.core.voiceprints import Voiceprint
from diarization.fanout.plan import Grid, ShardRange, batch_alignment, plan_shards

FILE_URI = "waveform"
"""The uri pyannote gives an in-memory waveform (``Audio.validate_file``); the reduce's file carries the same."""

_RANGE_FIELDS = ("first_chunk", "stop_chunk", "sample_start", "sample_stop", "window", "step")


def grid_for(diarizer: Diarizer, num_samples: int) -> Grid:
    """pyannote's sliding window for ``num_samples`` samples at 16 kHz, from the loaded segmentation ``Inference``
    (computed as ``Inference.slide`` computes it)."""
    inference = diarizer.loaded.pipeline._segmentation
    window = int(inference.model.audio.get_num_samples(inference.duration))
    exact_step = inference.step * SAMPLE_RATE
    step = round(exact_step)
    if step != exact_step or step < 1:
        raise ValueError(f"the segmentation step ({inference.step} s) is not a whole number of samples")
    if num_samples < 1:
        raise ValueError("no samples to diarize")
    return Grid(num_samples=num_samples, window=window, step=step)


def shard_plan(diarizer: Diarizer, num_samples: int, chunks_per_shard: int) -> tuple[ShardRange, ...]:
    """Shards of about ``chunks_per_shard`` chunks, aligned on the loaded pipeline's batch sizes."""
    pipeline = diarizer.loaded.pipeline
    alignment = batch_alignment(int(pipeline.segmentation_batch_size), int(pipeline.embedding_batch_size))
    return plan_shards(grid_for(diarizer, num_samples), chunks_per_shard, alignment)


def compute_shard(diarizer: Diarizer, samples: np.ndarray, shard: ShardRange) -> bytes:
    """Segmentations and embeddings of ``shard``'s chunks from ``samples`` = the decoded audio's
    ``[shard.sample_start, shard.sample_stop)``, serialized with ``np.savez`` (no pickled objects)."""
    import torch
    from pyannote.audio.utils.reproducibility import fix_reproducibility

    if samples.ndim != 1 or samples.dtype != np.float32:
        raise ValueError(f"a shard's samples are 1-D float32, not {samples.ndim}-D {samples.dtype}")
    expected = shard.sample_stop - shard.sample_start
    if len(samples) != expected:
        raise ValueError(
            f"shard {shard.index} reads samples [{shard.sample_start}, {shard.sample_stop}) "
            f"({expected}), but {len(samples)} were given"
        )
    pipeline = diarizer.loaded.pipeline
    grid = grid_for(diarizer, len(samples))
    file = {"waveform": torch.from_numpy(samples).unsqueeze(0), "sample_rate": SAMPLE_RATE, "uri": FILE_URI}
    with diarizer.running():
        fix_reproducibility(getattr(pipeline, "device", torch.device("cpu")))
        segmentations = pipeline.get_segmentations(file)
        chunks = segmentations.data.shape[0]
        if chunks != shard.stop_chunk - shard.first_chunk:
            raise ValueError(
                f"shard {shard.index}: pyannote cut {chunks} chunks from its samples, "
                f"not the {shard.stop_chunk - shard.first_chunk} of chunks [{shard.first_chunk}, {shard.stop_chunk})"
            )
        embeddings = pipeline.get_embeddings(
            file, _binarized(pipeline, segmentations), exclude_overlap=pipeline.embedding_exclude_overlap
        )
    buffer = io.BytesIO()
    np.savez(
        buffer,
        segmentations=segmentations.data,
        embeddings=embeddings,
        first_chunk=np.int64(shard.first_chunk),
        stop_chunk=np.int64(shard.stop_chunk),
        sample_start=np.int64(shard.sample_start),
        sample_stop=np.int64(shard.sample_stop),
        window=np.int64(grid.window),
        step=np.int64(grid.step),
    )
    return buffer.getvalue()


def reduce_shards(
    diarizer: Diarizer,
    parts: Sequence[bytes],
    num_samples: int,
    facts: AudioFacts,
    hints: SpeakerHints,
    input_uri: str,
    *,
    peak: float,
    decode_seconds: float = 0.0,
    voiceprints: Sequence[Voiceprint] = (),
    include_embeddings: bool = False,
) -> DiarizationResult:
    """The result :meth:`Diarizer.diarize_decoded` gives for the same audio, from every shard's part (any order).

    Raises ``ValueError`` unless the parts cover the file's chunks exactly once, in ranges of its grid. Timings:
    ``diarize_seconds`` is this reduce's time (reading the parts, clustering, reconstruction); the shards' time is
    not in it (it was spent elsewhere, in parallel) and ``decode_seconds`` is whatever the caller passes.
    """
    started = time.perf_counter()
    grid = grid_for(diarizer, num_samples)
    segmentations, embeddings = _concatenate([_load(part) for part in parts], grid)
    pipeline = diarizer.loaded.pipeline
    dimension = int(pipeline._embedding.dimension)
    if embeddings.shape[-1] != dimension:
        raise ValueError(f"the parts hold {embeddings.shape[-1]}-dim embeddings; this model makes {dimension}-dim ones")

    def run(pipeline_kwargs: dict[str, int]) -> Any:
        return _replay(pipeline, segmentations, embeddings).apply({"uri": FILE_URI}, **pipeline_kwargs)

    return diarizer.diarize_with(
        run,
        Prepared(facts, num_samples / SAMPLE_RATE, peak),
        hints,
        input_uri,
        started=started,
        decode_seconds=decode_seconds,
        voiceprints=voiceprints,
        include_embeddings=include_embeddings,
    )


def _binarized(pipeline: Any, segmentations: Any) -> Any:
    """What ``SpeakerDiarization.apply`` gives the embedding step: a powerset model's output is already binary; a
    multilabel one is thresholded per chunk (so a shard binarizes its chunks as the single run would)."""
    if pipeline._segmentation.model.specifications.powerset:
        return segmentations
    from pyannote.audio.utils.signal import binarize

    return binarize(segmentations, onset=pipeline.segmentation.threshold, initial_state=False)


def _replay(pipeline: Any, segmentations: np.ndarray, embeddings: np.ndarray) -> Any:
    """A shallow copy of the loaded pipeline whose segmentation and embedding steps return the shards' arrays.

    The copy shares the models, parameters and clustering (none is changed by ``apply``); only the two steps are
    replaced, on the copy's instance, so the process's pipeline stays untouched for the next single run.
    """
    import copy

    from pyannote.core import SlidingWindow, SlidingWindowFeature

    inference = pipeline._segmentation
    window = SlidingWindow(start=0.0, duration=inference.duration, step=inference.step)
    feature = SlidingWindowFeature(segmentations, window)

    def get_segmentations(file: Mapping[str, Any], hook: Any = None) -> Any:
        return feature

    def get_embeddings(file: Mapping[str, Any], binary_segmentations: Any, **_: Any) -> np.ndarray:
        return embeddings

    replay = copy.copy(pipeline)
    object.__setattr__(replay, "get_segmentations", get_segmentations)
    object.__setattr__(replay, "get_embeddings", get_embeddings)
    return replay


def _load(part: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(part), allow_pickle=False) as archive:
            loaded = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"a shard's part is not a shard output: {error}") from error
    missing = {"segmentations", "embeddings", *_RANGE_FIELDS} - set(loaded)
    if missing:
        raise ValueError(f"a shard's part lacks {', '.join(sorted(missing))}")
    return loaded


def _concatenate(parts: list[dict[str, np.ndarray]], grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """The file's segmentations and embeddings in chunk order; refuses a gap, an overlap, a duplicate or a part
    cut on another grid (another length, window or step)."""
    if not parts:
        raise ValueError("no shard parts to reduce")
    ordered = sorted(parts, key=lambda part: (int(part["first_chunk"]), int(part["stop_chunk"])))
    expected_first = 0
    for part in ordered:
        first, stop = int(part["first_chunk"]), int(part["stop_chunk"])
        if first < expected_first:
            raise ValueError(
                f"shard parts overlap or repeat: chunks [{first}, {stop}) start before chunk {expected_first}"
            )
        if first > expected_first:
            raise ValueError(f"a shard part is missing: chunks [{expected_first}, {first}) are in no part")
        if stop > grid.num_chunks:
            raise ValueError(f"chunks [{first}, {stop}) are not in this file's {grid.num_chunks} chunks")
        foreign = (int(part["window"]), int(part["step"])) != (grid.window, grid.step) or (
            int(part["sample_start"]),
            int(part["sample_stop"]),
        ) != grid.samples_for(first, stop)
        if foreign:
            raise ValueError(
                f"the part for chunks [{first}, {stop}) was cut from samples "
                f"[{int(part['sample_start'])}, {int(part['sample_stop'])}) with a {int(part['window'])}-sample "
                f"window every {int(part['step'])}; this file's grid reads {grid.samples_for(first, stop)} "
                f"with {grid.window} every {grid.step}"
            )
        if len(part["segmentations"]) != stop - first or len(part["embeddings"]) != stop - first:
            raise ValueError(f"the part for chunks [{first}, {stop}) holds {len(part['segmentations'])} chunks")
        expected_first = stop
    if expected_first != grid.num_chunks:
        raise ValueError(f"a shard part is missing: chunks [{expected_first}, {grid.num_chunks}) are in no part")
    shapes = {(part["segmentations"].shape[1:], part["embeddings"].shape[1:]) for part in ordered}
    if len(shapes) != 1:
        raise ValueError(f"shard parts disagree on frames, speakers or embedding size: {sorted(shapes)}")
    return (
        np.concatenate([part["segmentations"] for part in ordered]),
        np.concatenate([part["embeddings"] for part in ordered]),
    )
