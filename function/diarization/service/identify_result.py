"""Names on a result that was diarized elsewhere (the GPU endpoint): the Lambda path's matching, on the result's JSON.

The endpoint returns each speaker's centroid (`speaker_embeddings`, asked for when the run has voiceprints); the
voiceprints never leave Lambda. Matching is :func:`diarization.core.voiceprints.identify` with this deployment's
threshold, so a routed run gets the names, similarities and confidences the Lambda function would have given it,
and voiceprints of another model than the endpoint's are refused the same way (VOICEPRINT_MODEL_MISMATCH).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from diarization.core.voiceprints import EmbeddingModel, Voiceprint, identify

NO_EMBEDDINGS_WARNING = (
    "NOT IDENTIFIED: voiceprints {names} were asked for, but the GPU endpoint returned no speaker embeddings to "
    "match them against (is its image older than this function's?); every speaker stays anonymous."
)


def name_speakers(result: dict[str, Any], voiceprints: Sequence[Voiceprint], threshold: float) -> dict[str, Any]:
    """``result`` with its speakers named after ``voiceprints``, and without `speaker_embeddings`: no routed run
    asks for them (POST /jobs does not take them), and they are large. A malformed `speaker_embeddings` is a
    ValueError (the output is unreadable); a result without any gets :data:`NO_EMBEDDINGS_WARNING`, never silence."""
    named = {key: value for key, value in result.items() if key != "speaker_embeddings"}
    if not voiceprints:
        return named
    names = [voiceprint.name for voiceprint in voiceprints]
    embeddings = result.get("speaker_embeddings")
    if embeddings is None:
        named["warnings"] = [*result.get("warnings", []), NO_EMBEDDINGS_WARNING.format(names=names)]
        return named
    speakers = [dict(speaker) for speaker in result["speakers"]]
    centroids = _centroids(embeddings, [str(speaker["id"]) for speaker in speakers])
    # A result without speakers has no centroid to size the space by: the voiceprints' size is assumed, so the
    # model's name and revision are still checked.
    dimension = len(next(iter(centroids.values()), voiceprints[0].embedding))
    model = EmbeddingModel(str(result["model"]["name"]), result["model"].get("revision"), dimension)
    identities = identify(centroids, voiceprints, model, threshold)
    for speaker in speakers:
        if speaker["id"] in identities:
            speaker.update(asdict(identities[speaker["id"]]))
    named["speakers"] = speakers
    named["identification"] = {"threshold": threshold, "voiceprints": names}
    return named


def _centroids(embeddings: Any, labels: list[str]) -> dict[str, list[float]]:
    """The spoken speakers' centroids, all of one length and finite. A speaker without one (absent, or the empty
    list a result writes for it) stays anonymous, as in the Lambda path where pyannote gave it none."""
    if not isinstance(embeddings, dict):
        raise ValueError("speaker_embeddings is not an object")
    centroids = {label: _vector(embeddings.get(label) or [], label) for label in labels}
    centroids = {label: vector for label, vector in centroids.items() if vector}
    if len({len(vector) for vector in centroids.values()}) > 1:
        raise ValueError("speaker_embeddings are not all of one length")
    return centroids


def _vector(value: Any, label: str) -> list[float]:
    numbers = value if isinstance(value, list) else None
    if numbers is None or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in numbers):
        raise ValueError(f"speaker_embeddings[{label!r}] is not a list of numbers")
    if not all(math.isfinite(x) for x in numbers):
        raise ValueError(f"speaker_embeddings[{label!r}] is not all finite numbers")
    return [float(x) for x in numbers]
