"""``make quality``: how right the diarization is, on annotated speech, into docs/QUALITY.md.

Any pipeline directory this project loads can be scored (``--model-dir``); the page names it and
says whether its weights are trained. Each recording (see ``quality_data``) is diarized four ways:

- ``pipeline``: the project's own path (decode with PyAV, ``Diarizer``), no hint;
- ``num_speakers``: the same with the reference's speaker count as the hint;
- ``oracle``: pyannote's ``OracleClustering`` on the same segmentation — the reference decides which
  local speakers are the same person, so what remains is the segmentation's error (empty where it matches
  no local speaker to any reference speaker);
- ``speech``: the segmentation model alone as a voice activity detector (who speaks is ignored).

``--tune`` instead grid-searches the clustering threshold on train + development only and writes
it (``--tuning-output``) for the pipeline builder; test and sample are never tuned on.
``--check``/``--record`` compare the run with, or record it as, a thresholds file (``quality_gate``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from quality_data import SUBSETS, TUNING_SUBSETS, Item, fetch, load_items, whole
from quality_gate import check, figures, thresholds_from
from quality_metrics import (
    COLLAR_SECONDS,
    Components,
    detection_components,
    diarization_components,
    pooled,
    speaker_count,
)
from quality_page import render

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / ".models" / "real-weights")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".models" / "quality-data")
    # Sample and test first: the figures that matter are on the page soonest.
    parser.add_argument("--subsets", default="sample,test,development,train", help="comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "QUALITY.md")
    parser.add_argument("--results", type=Path, default=ROOT / ".bench" / "quality.json", help="the run's figures")
    parser.add_argument("--check", type=Path, metavar="THRESHOLDS", help="fail if a figure is worse than recorded")
    parser.add_argument("--record", type=Path, metavar="THRESHOLDS", help="record this run's figures as thresholds")
    parser.add_argument("--tune", action="store_true", help="grid-search the clustering threshold on train+dev")
    parser.add_argument("--tuning-output", type=Path, default=ROOT / "docs" / "quality-tuning.json")
    parser.add_argument("--grid-steps", type=int, default=16, help="thresholds tried across the parameter's range")
    parser.add_argument("--render", action="store_true", help="only rewrite the page from --results")
    args = parser.parse_args(argv)

    subsets = tuple(args.subsets.split(","))
    if unknown := sorted(set(subsets) - {*SUBSETS, "sample"}):
        parser.error(f"unknown subset(s) {', '.join(unknown)}: choose from {', '.join((*SUBSETS, 'sample'))}")
    if args.render:
        args.output.write_text(render(json.loads(args.results.read_text())))
        return 0

    data_dir = fetch(args.cache_dir)
    if args.tune:
        tuning = tune(load_items(data_dir, TUNING_SUBSETS), args.model_dir, args.grid_steps)
        _write_json(args.tuning_output, tuning)
        print(f"quality: clustering threshold {tuning['best']['threshold']} -> {args.tuning_output}", file=sys.stderr)
        return 0

    def write(run: dict[str, Any]) -> None:
        _write_json(args.results, run)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(render(run))

    run = evaluate(load_items(data_dir, subsets), args.model_dir, args.threads, write)
    if args.record:
        _write_json(args.record, thresholds_from(run))
    if args.check:
        failures = check(json.loads(args.check.read_text()), run)
        for failure in failures:
            print(f"quality gate: {failure}", file=sys.stderr)
        return 1 if failures else 0
    return 0


class Scorer:
    """The pipelines under test, loaded once for every recording."""

    def __init__(self, model_dir: Path, threads: int) -> None:
        from quality_pipelines import OracleDiarization, speech_detection

        from diarization.core.config import Settings
        from diarization.core.engine import Diarizer

        self.settings = Settings(model_dir=model_dir, num_threads=threads)
        self.diarizer = Diarizer.from_settings(self.settings)
        self.oracle = OracleDiarization(model_dir)
        self.speech = speech_detection(self.oracle.pipeline._segmentation.model)

    def score(self, item: Item) -> dict[str, Any]:
        import torch

        from diarization.core.engine import decode_within_limits
        from diarization.core.hints import SpeakerHints

        audio, _ = decode_within_limits(self.settings, item.audio)
        uem = item.uem if item.uem is not None else whole(audio.duration_seconds)
        reference = item.reference.crop(uem)
        speakers = speaker_count(item.reference, uem)
        file = {
            "uri": item.uri,
            "waveform": torch.from_numpy(audio.samples).unsqueeze(0),
            "sample_rate": audio.sample_rate,
            "annotation": reference,
        }
        with torch.inference_mode():
            hypotheses = {
                "pipeline": self._diarize(audio, SpeakerHints(), item.uri),
                "num_speakers": self._diarize(audio, SpeakerHints(num_speakers=speakers), item.uri),
                "oracle": self.oracle(file, num_speakers=speakers),
            }
            speech = self.speech(dict(file)).get_timeline()
        return {
            "uri": item.uri,
            "subset": item.subset,
            "duration": round(audio.duration_seconds, 3),
            "reference_speakers": speakers,
            "speech": detection_components(reference, speech, uem).to_dict(),
            "conditions": {
                name: {
                    "speakers": speaker_count(hypothesis, uem),
                    "no_collar": diarization_components(reference, hypothesis, uem).to_dict(),
                    "collar": diarization_components(reference, hypothesis, uem, COLLAR_SECONDS).to_dict(),
                }
                for name, hypothesis in hypotheses.items()
            },
        }

    def _diarize(self, audio: Any, hints: Any, uri: str) -> Any:
        from pyannote.core import Annotation, Segment

        result = self.diarizer.diarize_decoded(audio, hints, uri)
        annotation = Annotation(uri=uri)
        for index, segment in enumerate(result.segments):
            annotation[Segment(segment.start, segment.end), index] = segment.speaker
        return annotation


def evaluate(
    items: list[Item], model_dir: Path, threads: int, progress: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Every recording scored under every condition, with what produced the figures.

    ``progress`` gets the run so far after each file, so an interrupted run still leaves what it measured.
    """
    started = datetime.datetime.now(datetime.UTC)
    scorer = Scorer(model_dir, threads)
    loaded = scorer.diarizer.loaded
    scored: list[dict[str, Any]] = []
    run: dict[str, Any] = {
        "started": f"{started:%Y-%m-%d %H:%M} UTC",
        "commit": _commit(),
        "model_dir": str(model_dir),
        "model": loaded.manifest.to_dict(),
        "clustering": _clustering(loaded.pipeline),
        "pyannote_version": loaded.pyannote_version,
        "threads": threads,
        "collar_seconds": COLLAR_SECONDS,
        "items": scored,
        "figures": {},
    }
    for item in items:
        print(f"quality: {item.subset} {item.uri} ...", file=sys.stderr, flush=True)
        scored.append(scorer.score(item))
        run["figures"] = figures(scored)
        if progress is not None:
            progress(run)
    return run


def tune(items: list[Item], model_dir: Path, steps: int) -> dict[str, Any]:
    """The clustering threshold with the lowest pooled DER (no collar, no hint) on ``items``.

    pyannote caches segmentations and embeddings in each file's dict while ``training`` is set, so
    only the clustering runs again for each threshold. Ties go to the lowest threshold.
    """
    import torch
    from pyannote.audio import Pipeline

    from diarization.core.config import Settings
    from diarization.core.engine import decode_within_limits
    from diarization.core.modeldir import read_manifest

    settings = Settings(model_dir=model_dir)
    pipeline = Pipeline.from_pretrained(model_dir)
    pipeline.training = True
    configured = _clustering(pipeline)
    parameter = pipeline.clustering._parameters["threshold"]
    grid = [round(float(value), 4) for value in np.linspace(parameter.low, parameter.high, steps)]
    files = []
    for item in items:
        audio, _ = decode_within_limits(settings, item.audio)
        uem = item.uem if item.uem is not None else whole(audio.duration_seconds)
        waveform = torch.from_numpy(audio.samples).unsqueeze(0)
        files.append(({"uri": item.uri, "waveform": waveform, "sample_rate": audio.sample_rate}, item, uem))
    rows = []
    for threshold in grid:
        params = pipeline.parameters(instantiated=True)
        params["clustering"]["threshold"] = threshold
        pipeline.instantiate(params)
        components: list[Components] = []
        with torch.inference_mode():
            for file, item, uem in files:
                hypothesis = pipeline(file).speaker_diarization
                components.append(diarization_components(item.reference.crop(uem), hypothesis, uem))
        rows.append({"threshold": threshold, "der": round(pooled(components).error_rate, 4)})
        print(f"quality: threshold {threshold}: DER {rows[-1]['der']:.4f}", file=sys.stderr, flush=True)
    return {
        "model_dir": str(model_dir),
        "model": read_manifest(model_dir).to_dict(),
        "clustering": configured,
        "tuned_on": sorted({item.subset for item in items}),
        "files": [item.uri for item in items],
        "criterion": "pooled DER, no collar, overlap scored, no speaker-count hint",
        "grid": rows,
        "best": min(rows, key=lambda row: row["der"]),
    }


def _clustering(pipeline: Any) -> dict[str, Any]:
    return {"name": type(pipeline.clustering).__name__, **pipeline.clustering.parameters(instantiated=True)}


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _commit() -> str:
    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, cwd=ROOT, capture_output=True, text=True, check=False).stdout  # noqa: S603 - fixed argv
    return commit.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
