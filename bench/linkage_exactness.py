"""Is fastcluster's O(n·d) centroid linkage the same as scipy's on real embeddings? (issue #13, item 3)

For each pipeline and recording, the train embeddings that pyannote's clustering hands to ``linkage`` are captured
(normalised, exactly as passed), and both linkages are run on them:

* ``same_merges``: the same pair of clusters merged at every step, in the same order;
* ``max_height_difference``: the largest |scipy − fastcluster| merge height;
* ``same_labels``: ``fcluster(Z, threshold, "distance")`` identical at the pipeline's own threshold (0.6 for
  community-1's VBx, :data:`diarization.modelmaking.realweights.pipeline.CLUSTERING_THRESHOLD` for the real-weights
  pipeline);
* ``inversions``: merges lower than the one before (centroid linkage is not monotonic);
* ``zero_distance_pairs``: duplicate embeddings (distance 0: ties that the two algorithms break differently).

With ``--end-to-end`` the whole diarization then runs twice through :class:`diarization.core.engine.Diarizer` — scipy
everywhere (``VECTOR_LINKAGE_MIN_EMBEDDINGS`` above any n) and fastcluster everywhere (0) — and the segments are
compared; with a reference (the AMI excerpts, the sample) the DER of both is reported (no collar, overlap scored,
within the UEM). The real-weights pipeline also runs with the reference's speaker count as a hint
(``num_speakers``), the path where pyannote's agglomerative clustering walks the dendrogram's heights.

Recordings: the 14 AMI excerpts and the sample (30 s each), all 15 concatenated (7.5 min, more embeddings), and the
sample tiled 4× (2 min: chunks 30 s apart hold the same audio, so their embeddings are exact duplicates).

Usage: ``python bench/linkage_exactness.py [--pipelines real,production] [--only NAMES] [--end-to-end] [--json F]``
(``make real-model model`` first; minutes: the production pipeline's random-weight embeddings are the slow part).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "function"))
sys.path.insert(0, str(ROOT / "bench"))

from diarization.core.runtime import prepare_environment  # noqa: E402

MODEL_DIRS = {"real": ROOT / ".models" / "real-weights", "production": ROOT / ".models" / "offline-production"}
HUGE = 10**12


def compare_linkages(vectors: np.ndarray, threshold: float) -> dict[str, Any]:
    import fastcluster
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage as scipy_linkage
    from scipy.spatial.distance import pdist

    matrix = scipy_linkage(vectors, method="centroid", metric="euclidean")
    vector = fastcluster.linkage_vector(np.asarray(vectors, dtype=np.float64), method="centroid")
    same_rows = (matrix[:, :2] == vector[:, :2]).all(axis=1) & (matrix[:, 3] == vector[:, 3])
    labels_matrix = fcluster(matrix, threshold, criterion="distance")
    labels_vector = fcluster(vector, threshold, criterion="distance")
    return {
        "n": int(vectors.shape[0]),
        "same_merges": bool(same_rows.all()),
        "first_different_merge": None if same_rows.all() else int(np.argmin(same_rows)),
        "max_height_difference": float(np.max(np.abs(matrix[:, 2] - vector[:, 2]))),
        "same_labels": bool((labels_matrix == labels_vector).all()),
        "clusters_at_threshold": int(labels_matrix.max()),
        "inversions": int(np.sum(np.diff(matrix[:, 2]) < 0)),
        "zero_distance_pairs": int(np.sum(pdist(vectors) == 0.0)),
    }


def recordings(data_dir: Path) -> list[tuple[str, Any, Any, Any]]:
    """(name, decoded audio, reference or None, uem or None)."""
    import dataclasses

    from pyannote.core import Annotation, Segment, Timeline
    from quality_data import load_items, whole

    from diarization.core.audio import decode_audio

    items = load_items(data_dir)
    out: list[tuple[str, Any, Any, Any]] = []
    pieces: list[np.ndarray] = []
    joined_reference = Annotation(uri="concatenated")
    joined_uem: list[Any] = []
    offset = 0.0
    for item in items:
        audio = decode_audio(item.audio, max_bytes=2**30, max_seconds=3600.0)
        samples = audio.samples
        uem = item.uem if item.uem is not None else whole(audio.duration_seconds)
        out.append((item.uri, audio, item.reference, uem))
        for segment, track, speaker in item.reference.itertracks(yield_label=True):
            joined_reference[Segment(segment.start + offset, segment.end + offset), (item.uri, track)] = (
                f"{item.uri}:{speaker}"
            )
        joined_uem += [Segment(s.start + offset, s.end + offset) for s in uem]
        pieces.append(samples)
        offset += len(samples) / 16_000
    out.append(
        (
            "concatenated",
            dataclasses.replace(audio, samples=np.concatenate(pieces)),
            joined_reference,
            Timeline(joined_uem),
        )
    )
    sample = next(decoded for name, decoded, _, _ in out if name == "sample")
    out.append(("sample-tiled-4x", dataclasses.replace(sample, samples=np.tile(sample.samples, 4)), None, None))
    return out


def run_pipeline(
    name: str, data: list[tuple[str, Any, Any, Any]], with_hint: bool, end_to_end: bool
) -> list[dict[str, Any]]:
    from pyannote.core import Annotation, Segment
    from quality_metrics import diarization_components, speaker_count

    from diarization.core import linkage as linkage_module
    from diarization.core.config import Settings
    from diarization.core.engine import Diarizer
    from diarization.core.hints import SpeakerHints

    diarizer = Diarizer.from_settings(Settings(model_dir=MODEL_DIRS[name], num_threads=2))
    clustering = diarizer.loaded.pipeline.clustering
    threshold = float(clustering.threshold)
    captured: list[np.ndarray] = []

    def capturing(y: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        captured.append(np.array(y, copy=True))
        return linkage_module.linkage(y, *args, **kwargs)

    # The loaded clustering's class is the substitute; a subclass of it records what reaches `linkage`.
    substitute = type(clustering)
    method = "__call__" if "__call__" in vars(substitute) else "cluster"

    class Capturing(substitute):  # type: ignore[misc, valid-type]
        pass

    setattr(Capturing, method, linkage_module.rebind(getattr(substitute, method), linkage=capturing))
    clustering.__class__ = Capturing

    def annotate(result: Any, uri: str) -> Annotation:
        annotation = Annotation(uri=uri)
        for index, segment in enumerate(result.segments):
            annotation[Segment(segment.start, segment.end), index] = segment.speaker
        return annotation

    rows = []
    default_threshold = linkage_module.VECTOR_LINKAGE_MIN_EMBEDDINGS
    for uri, audio, reference, uem in data:
        conditions = {"no hint": SpeakerHints()}
        if with_hint and end_to_end and reference is not None:
            conditions["num_speakers"] = SpeakerHints(num_speakers=speaker_count(reference, uem))
        for condition, hints in conditions.items():
            outputs = {}
            for linkage in ("scipy", "vector") if end_to_end else ("vector",):
                linkage_module.VECTOR_LINKAGE_MIN_EMBEDDINGS = HUGE if linkage == "scipy" else 0
                captured.clear()
                started = time.perf_counter()
                outputs[linkage] = (diarizer.diarize_decoded(audio, hints, uri), time.perf_counter() - started)
                vectors = captured[0] if captured else None
            row: dict[str, Any] = {"pipeline": name, "uri": uri, "condition": condition, "threshold": threshold}
            row.update(compare_linkages(vectors, threshold) if vectors is not None else {"n": 0})
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            if not end_to_end:
                continue
            scipy_result, vector_result = outputs["scipy"][0], outputs["vector"][0]
            row["same_segments"] = [(s.start, s.end, s.speaker) for s in scipy_result.segments] == [
                (s.start, s.end, s.speaker) for s in vector_result.segments
            ]
            row["turns"] = [len(scipy_result.segments), len(vector_result.segments)]
            row["seconds"] = [round(outputs["scipy"][1], 2), round(outputs["vector"][1], 2)]
            if reference is not None:
                row["der"] = [
                    round(diarization_components(reference, annotate(r, uri), uem).error_rate, 6)
                    for r in (scipy_result, vector_result)
                ]
            print(json.dumps(row), file=sys.stderr, flush=True)
    linkage_module.VECTOR_LINKAGE_MIN_EMBEDDINGS = default_threshold
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", default="real,production")
    parser.add_argument("--data", type=Path, default=ROOT / ".models" / "quality-data" / "data")
    parser.add_argument("--only", default="", help="comma-separated recording names (default: all)")
    parser.add_argument(
        "--end-to-end", action="store_true", help="also diarize with each linkage and compare the segments and DER"
    )
    parser.add_argument("--no-hint", action="store_true", help="skip the num_speakers condition")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    prepare_environment(offline=True)
    from quality_data import verify

    verify(args.data)
    data = recordings(args.data)
    if args.only:
        wanted = set(args.only.split(","))
        data = [entry for entry in data if entry[0] in wanted]
    rows: list[dict[str, Any]] = []
    for name in args.pipelines.split(","):
        rows += run_pipeline(name, data, with_hint=name == "real" and not args.no_hint, end_to_end=args.end_to_end)
    summary = {
        "rows": len(rows),
        "all_same_merges": all(r.get("same_merges", True) for r in rows),
        "all_same_labels": all(r.get("same_labels", True) for r in rows),
        "all_same_segments": all(r.get("same_segments", True) for r in rows),
        "max_height_difference": max((r.get("max_height_difference", 0.0) for r in rows), default=0.0),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
