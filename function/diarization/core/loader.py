"""Load the pyannote pipeline from a local directory, once per process.

Lambda and SageMaker reuse a process for many requests; loading (imports plus
weights, seconds) must happen at start-up, not per request. ``load_pipeline``
caches by (directory, device, threads, batch sizes), so every caller in a
process shares one pipeline.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diarization.core.config import Settings
from diarization.core.modeldir import FIX, ModelManifest, check_model_dir, read_manifest
from diarization.core.precision import choose_precision, detect_machine, read_proof
from diarization.core.runtime import DeviceInfo, prepare_environment, select_device
from diarization.errors import DiarizationError, ModelInvalidError

logger = logging.getLogger("diarization")


@dataclass(frozen=True)
class LoadedPipeline:
    pipeline: Any
    """A ``pyannote.audio.pipelines.SpeakerDiarization``; typed loosely so adapters need no pyannote."""
    model_dir: Path
    manifest: ModelManifest
    device: DeviceInfo
    pyannote_version: str
    load_seconds: float
    fast_embeddings: bool = False
    """Whether :mod:`diarization.core.fastpath` computes the embeddings."""
    embedding_precision: str = "fp32"
    """The embedding trunk's arithmetic (:mod:`diarization.core.precision`)."""
    precision_reason: str = ""
    vector_linkage: bool = False
    """Whether the clustering's centroid linkage goes through :mod:`diarization.core.linkage` (fastcluster's O(n·d)
    ``linkage_vector`` from ``VECTOR_LINKAGE_MIN_EMBEDDINGS`` embeddings on)."""


_cache: dict[tuple[Any, ...], LoadedPipeline] = {}
_lock = threading.Lock()


def load_pipeline(settings: Settings) -> LoadedPipeline:
    """The process's pipeline for these settings, loading it on first use."""
    key = (
        settings.model_dir.resolve(),
        settings.device,
        settings.effective_threads,
        settings.embedding_batch_size,
        settings.segmentation_batch_size,
        settings.fast_embeddings,
        settings.embedding_precision,
    )
    with _lock:
        if key not in _cache:
            _cache[key] = _load(settings)
        return _cache[key]


def _load(settings: Settings) -> LoadedPipeline:
    started = time.perf_counter()
    model_dir = settings.model_dir
    check_model_dir(model_dir)
    manifest = read_manifest(model_dir)
    prepare_environment(offline=True)
    device = select_device(settings.device, settings.effective_threads)

    import torch
    from pyannote.audio import __version__ as pyannote_version

    from diarization.core.linkage import use_vector_linkage

    pipeline = _instantiate(model_dir)
    if settings.embedding_batch_size is not None:
        pipeline.embedding_batch_size = settings.embedding_batch_size
    if settings.segmentation_batch_size is not None:
        pipeline.segmentation_batch_size = settings.segmentation_batch_size
    pipeline.to(torch.device(device.device))
    # Same dendrogram, O(n·d) memory for long files (see diarization.core.linkage); False for other clusterings.
    vector_linkage = use_vector_linkage(pipeline)
    fast_embeddings = _accelerate(pipeline, settings, device)
    choice = choose_precision(
        settings.embedding_precision, detect_machine(), device.device, read_proof(model_dir), trunk=fast_embeddings
    )
    if fast_embeddings:
        pipeline.trunk_precision = choice.precision
    logger.info("embedding precision %s: %s", choice.precision, choice.reason)

    loaded = LoadedPipeline(
        pipeline=pipeline,
        model_dir=model_dir,
        manifest=manifest,
        device=device,
        pyannote_version=pyannote_version,
        load_seconds=time.perf_counter() - started,
        fast_embeddings=fast_embeddings,
        embedding_precision=choice.precision,
        precision_reason=choice.reason,
        vector_linkage=vector_linkage,
    )
    logger.info(
        "loaded pipeline %s (revision %s, %s) from %s in %.2f s, %s embedding path",
        manifest.name,
        manifest.revision,
        "trained" if manifest.trained else "UNTRAINED",
        model_dir,
        loaded.load_seconds,
        "fast" if fast_embeddings else "upstream",
    )
    return loaded


def _instantiate(model_dir: Path) -> Any:
    """pyannote's own loader on the directory; whatever it raises becomes MODEL_INVALID with the fix to apply."""
    from pyannote.audio import Pipeline

    try:
        pipeline = Pipeline.from_pretrained(model_dir)
    except DiarizationError:
        raise
    except Exception as error:
        raise ModelInvalidError(
            f"Model directory {str(model_dir)!r} could not be loaded: {type(error).__name__}: {error}. {FIX}",
            model_dir=str(model_dir),
        ) from error
    if pipeline is None:
        raise ModelInvalidError(
            f"Model directory {str(model_dir)!r} could not be loaded. {FIX}", model_dir=str(model_dir)
        )
    return pipeline


def _accelerate(pipeline: Any, settings: Settings, device: DeviceInfo) -> bool:
    """Whether the shared-trunk embedding path (diarization.core.fastpath) now runs this pipeline's embeddings."""
    if not settings.fast_embeddings:
        return False
    from diarization.core.fastpath import accelerate

    fast_embeddings = accelerate(pipeline)
    if fast_embeddings and device.device == "cpu":
        _cpu_batch_sizes(pipeline, settings)
    if not fast_embeddings:
        logger.warning("fast embedding path not applicable to %s; using pyannote's own", type(pipeline).__name__)
    return fast_embeddings


CPU_EMBEDDING_BATCH_SIZE = 1
"""Chunks per trunk pass on CPU: more were no faster, and each adds ~40 MB of activations."""
CPU_SEGMENTATION_BATCH_SIZE = 4
"""Measured on 4 minutes of speech, 2 threads: 4 is as fast as 32 (9.1 s vs 9.6 s) and peaks
330 MB lower (SincNet's first layers dominate the working set); 1 is 40 % slower."""


def _cpu_batch_sizes(pipeline: Any, settings: Settings) -> None:
    """The fast path's CPU defaults, where the deployment did not set a batch size itself."""
    if settings.embedding_batch_size is None:
        pipeline.embedding_batch_size = CPU_EMBEDDING_BATCH_SIZE
    if settings.segmentation_batch_size is None:
        pipeline.segmentation_batch_size = CPU_SEGMENTATION_BATCH_SIZE
