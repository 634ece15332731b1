"""Write pipeline directories with seeded random weights, no network needed.

``production``: the architectures of pyannote/speaker-diarization-community-1
(segmentation-3.0-shaped PyanNet with powerset output, WeSpeaker ResNet34, PLDA
for VBx), so compute time and memory equal the pretrained pipeline's. For
benchmarks, the local demo and image builds.

``tiny``: pyannote's debug segmentation model and a tiny embedding model, for
fast tests of the real pipeline code.

Both write the same layout as ``bake`` and a manifest that marks them untrained:
their output is *not* a meaningful diarization.

Usage: ``python -m diarization.modelmaking.offline OUT_DIR [--variant production|tiny] [--seed N]``
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

VARIANTS = ("production", "tiny")

SPEECH_BIAS = 2.0
"""Added to the single-speaker classes of the random segmentation head so that some frames are
speech; with unbiased random weights the pipeline often sees silence everywhere and exits early."""


def pipeline_config() -> dict[str, Any]:
    """community-1's config.yaml, value for value: VBx clustering and its hyper-parameters. The loader's
    CPU batch sizes (``loader``) and any ``*_BATCH_SIZE`` setting apply on top at load time, as they
    would to the baked community-1 directory."""
    return {
        "dependencies": {"pyannote.audio": "4.0.0"},
        "pipeline": {
            "name": "pyannote.audio.pipelines.SpeakerDiarization",
            "params": {
                "clustering": "VBxClustering",
                "embedding": "$model/embedding",
                "embedding_batch_size": 32,
                "embedding_exclude_overlap": True,
                "plda": "$model/plda",
                "segmentation": "$model/segmentation",
                "segmentation_batch_size": 32,
            },
        },
        "params": {
            "clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8},
            "segmentation": {"min_duration_off": 0.0},
        },
    }


def write_offline_pipeline(out_dir: Path, variant: str = "production", seed: int = 0) -> Path:
    """Write a complete, loadable pipeline directory with random weights and return it."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    prepare_environment()
    import torch
    from pyannote.audio import __version__ as pyannote_version

    torch.manual_seed(seed)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    segmentation = _segmentation_model(variant)
    embedding = _embedding_model(variant)
    save_model(segmentation, tmp / "segmentation" / MODEL_FILE)
    save_model(embedding, tmp / "embedding" / MODEL_FILE)
    _write_plda(tmp / "plda", dimension=embedding.dimension, seed=seed)
    (tmp / CONFIG_FILE).write_text(yaml.safe_dump(pipeline_config(), sort_keys=False))
    write_manifest(
        tmp,
        ModelManifest(
            name=f"offline-{variant}-untrained",
            revision=f"seed-{seed}",
            trained=False,
            source="offline",
            created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            pyannote_version=pyannote_version,
        ),
    )
    check_model_dir(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def powerset_specifications() -> Any:
    from pyannote.audio.core.task import Problem, Resolution, Specifications

    return Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=10.0,
        warm_up=(0.0, 0.0),
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )


def segmentation_3_0() -> Any:
    """segmentation-3.0's architecture, built: PyanNet, SincNet stride 10, 4 bi-LSTM layers, powerset output."""
    from pyannote.audio.models.segmentation import PyanNet

    model = PyanNet(
        sincnet={"stride": 10},
        lstm={"hidden_size": 128, "num_layers": 4, "bidirectional": True, "monolithic": True, "dropout": 0.5},
        linear={"hidden_size": 128, "num_layers": 2},
    )
    model.specifications = powerset_specifications()
    model.build()
    return model


def _segmentation_model(variant: str) -> Any:
    import torch

    if variant == "production":
        model = segmentation_3_0()
    else:
        from pyannote.audio.models.segmentation.debug import SimpleSegmentationModel

        model = SimpleSegmentationModel()
        model.specifications = powerset_specifications()
        model.build()
    with torch.no_grad():
        # powerset classes: [silence, {1}, {2}, {3}, {1,2}, {1,3}, {2,3}]
        model.classifier.bias[1:4] += SPEECH_BIAS
    return model.eval()


def _embedding_model(variant: str) -> Any:
    from pyannote.audio.core.task import Problem, Resolution, Specifications

    model: Any
    if variant == "production":
        from pyannote.audio.models.embedding import WeSpeakerResNet34

        model = WeSpeakerResNet34()
    else:
        from diarization.modelmaking.tiny_embedding import TinySpeakerEmbedding

        model = TinySpeakerEmbedding()
    model.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=10.0)
    return model.eval()


def save_model(model: Any, path: Path) -> None:
    """A checkpoint in the format ``Model.from_pretrained`` reads (what Lightning would write)."""
    import lightning
    import torch

    checkpoint: dict[str, Any] = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)


def _write_plda(plda_dir: Path, dimension: int, seed: int) -> None:
    """A valid VBx PLDA: an orthonormal LDA projection and a positive between-class spectrum."""
    rng = np.random.default_rng(seed)
    lda_dimension = min(128, dimension)
    lda, _ = np.linalg.qr(rng.standard_normal((dimension, lda_dimension)))
    plda_dir.mkdir(parents=True, exist_ok=True)
    np.savez(
        plda_dir / "xvec_transform.npz",
        mean1=0.01 * rng.standard_normal(dimension),
        mean2=0.01 * rng.standard_normal(lda_dimension),
        lda=lda,
    )
    np.savez(
        plda_dir / "plda.npz",
        mu=np.zeros(lda_dimension),
        tr=np.eye(lda_dimension),
        psi=np.sort(rng.uniform(0.5, 5.0, lda_dimension))[::-1].copy(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diarization.modelmaking.offline",
        description="Write an UNTRAINED pipeline directory (random weights, production or tiny architectures).",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--variant", choices=VARIANTS, default="production")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_offline_pipeline(args.out_dir, args.variant, args.seed)
    print(f"wrote UNTRAINED {args.variant} pipeline (random weights, seed {args.seed}) to {path}", file=sys.stderr)
    print(NO_PRECISION_PROOF.format(path=path), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
