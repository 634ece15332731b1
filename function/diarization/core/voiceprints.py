"""Voiceprints: enroll a named speaker from a short sample, then put names on the speakers of a result.

A voiceprint is the centroid embedding pyannote computes for the sample's dominant speaker, with
the identity of the model that made it: embeddings of different models (or of one model's
revisions) live in different spaces, so comparing them would give confident nonsense, and
:func:`identify` refuses it. No torch here: adapters store and send voiceprints as JSON.

Matching (:func:`identify`): the cosine similarity of every speaker centroid with every
voiceprint, a one-to-one assignment maximising the total similarity (a voice cannot be two
speakers, nor a speaker two people), and a threshold below which the speaker stays anonymous.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from diarization.core.result import NO_IDENTITY, SpeakerIdentity
from diarization.errors import EnrollmentNoSpeechError, InvalidVoiceprintError, VoiceprintModelMismatchError

VOICEPRINT_FORMAT = "voiceprint-1"
MAX_VOICEPRINTS = 16
"""Per request: the assignment is cheap, but a request naming more is more likely a mistake than a roster."""
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}\Z")
"""Names become file names and S3 keys: no '/', no leading dot, no control characters, bounded length."""


@dataclass(frozen=True)
class EmbeddingModel:
    """Which model's embedding space a voiceprint lives in."""

    name: str
    revision: str | None
    dimension: int

    def describe(self) -> str:
        return f"{self.name}@{self.revision or 'unversioned'} ({self.dimension}-dim)"


@dataclass(frozen=True)
class Voiceprint:
    name: str
    embedding: tuple[float, ...]
    model: EmbeddingModel
    created_at: str
    enrollment: Mapping[str, Any]
    """How it was made: the speaker taken, its speaking time, how many speakers the sample had."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": VOICEPRINT_FORMAT,
            "name": self.name,
            "model": {"name": self.model.name, "revision": self.model.revision, "dimension": self.model.dimension},
            "created_at": self.created_at,
            "enrollment": dict(self.enrollment),
            "embedding": [round(value, 7) for value in self.embedding],
        }

    @classmethod
    def from_dict(cls, body: Any) -> Voiceprint:
        """A voiceprint as stored or sent; anything else is :class:`InvalidVoiceprintError`."""
        try:
            if body["format"] != VOICEPRINT_FORMAT:
                raise ValueError(f"format {body['format']!r} is not {VOICEPRINT_FORMAT!r}")
            model = body["model"]
            embedding = tuple(float(value) for value in body["embedding"])
            dimension = int(model["dimension"])
            if len(embedding) != dimension or not all(math.isfinite(value) for value in embedding):
                raise ValueError(f"the embedding is not {dimension} finite numbers")
            revision = model["revision"]
            return cls(
                name=check_name(body["name"]),
                embedding=embedding,
                model=EmbeddingModel(str(model["name"]), None if revision is None else str(revision), dimension),
                created_at=str(body["created_at"]),
                enrollment=dict(body.get("enrollment") or {}),
            )
        except InvalidVoiceprintError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidVoiceprintError(f"Not a voiceprint ({type(error).__name__}: {error}).") from error


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidVoiceprintError(
            f"Voiceprint name {name!r} is invalid: 1-64 letters, digits, spaces, '.', '_' or '-', "
            "starting with a letter or digit.",
            name=str(name)[:80],
        )
    return name


def enroll(
    name: str,
    model: EmbeddingModel,
    speakers: Mapping[str, float],
    embeddings: Mapping[str, Sequence[float]],
    created_at: str | None = None,
) -> Voiceprint:
    """The voiceprint of the sample's dominant speaker (most speaking time) whose centroid is usable.

    ``speakers`` maps each speaker label to its speaking seconds; ``embeddings`` its centroid. A sample
    with several speakers still enrolls (a short recording often catches someone else's word), and
    ``enrollment`` says how many were found and which was taken so the caller can check.
    """
    check_name(name)
    usable = [
        label for label in speakers if label in embeddings and _norm(embeddings[label]) > 0 and speakers[label] > 0
    ]
    if not usable:
        raise EnrollmentNoSpeechError(
            f"No speech found to enroll {name!r} from: give a few seconds of this speaker talking alone.", name=name
        )
    label = max(usable, key=lambda candidate: (speakers[candidate], candidate))
    vector = np.asarray(embeddings[label], dtype=np.float64)
    if vector.shape != (model.dimension,):
        raise InvalidVoiceprintError(f"The centroid has {vector.size} values, not {model.dimension}.")
    return Voiceprint(
        name=name,
        embedding=tuple(float(value) for value in vector / np.linalg.norm(vector)),
        model=model,
        created_at=created_at or datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        enrollment={
            "speaker": label,
            "speaking_seconds": round(speakers[label], 3),
            "speakers_found": len(speakers),
        },
    )


def check_compatible(voiceprints: Sequence[Voiceprint], model: EmbeddingModel) -> None:
    """Refuse voiceprints of another embedding model before any similarity is computed."""
    foreign = [voiceprint for voiceprint in voiceprints if voiceprint.model != model]
    if foreign:
        raise VoiceprintModelMismatchError(
            f"Voiceprint(s) {[v.name for v in foreign]} were made by {foreign[0].model.describe()}, but this "
            f"deployment's model is {model.describe()}: embeddings of different models cannot be compared. "
            "Enroll them again with this model.",
            voiceprints=[v.name for v in foreign],
            voiceprint_model=foreign[0].model.describe(),
            model=model.describe(),
        )
    names = [voiceprint.name for voiceprint in voiceprints]
    if len(set(names)) != len(names):
        raise InvalidVoiceprintError(f"Voiceprint names must be distinct; got {names}.")
    if len(voiceprints) > MAX_VOICEPRINTS:
        raise InvalidVoiceprintError(f"At most {MAX_VOICEPRINTS} voiceprints per request; got {len(voiceprints)}.")


def identify(
    embeddings: Mapping[str, Sequence[float]],
    voiceprints: Sequence[Voiceprint],
    model: EmbeddingModel,
    threshold: float,
) -> dict[str, SpeakerIdentity]:
    """An :class:`SpeakerIdentity` for every speaker in ``embeddings`` (label -> centroid)."""
    check_compatible(voiceprints, model)
    labels = sorted(embeddings)
    if not voiceprints or not labels:
        return {label: NO_IDENTITY for label in labels}
    centroids = np.asarray([_unit(embeddings[label]) for label in labels])
    prints = np.asarray([_unit(voiceprint.embedding) for voiceprint in voiceprints])
    similarity = centroids @ prints.T
    rows, columns = linear_sum_assignment(similarity, maximize=True)
    assigned = {int(row): int(column) for row, column in zip(rows, columns, strict=True)}
    identities = {}
    for row, label in enumerate(labels):
        scores = similarity[row]
        if not centroids[row].any():  # pyannote pads centroids with zeros for speakers it has none for
            identities[label] = NO_IDENTITY
            continue
        column = assigned.get(row)
        if column is not None and scores[column] >= threshold:
            others = np.delete(scores, column)
            runner_up = float(others.max()) if others.size else None
            identities[label] = SpeakerIdentity(
                voiceprints[column].name,
                round(float(scores[column]), 4),
                confidence(float(scores[column]), runner_up, threshold),
            )
        else:
            identities[label] = SpeakerIdentity(None, round(float(scores.max()), 4), None)
    return identities


def confidence(similarity: float, runner_up: float | None, threshold: float) -> float:
    """``clip((s - max(t, r)) / (1 - t), 0, 1)``, rounded to 0.001.

    ``s`` is the similarity with the matched voiceprint, ``t`` the threshold and ``r`` the speaker's
    similarity with the closest other voiceprint of the request (``t`` when there is none). 0 at the
    threshold or when another voiceprint is as close, 1 for an identical voice that nothing else
    resembles: how far the match stands above both the threshold and the alternatives.
    """
    floor = threshold if runner_up is None else max(threshold, runner_up)
    return round(min(1.0, max(0.0, (similarity - floor) / (1.0 - threshold))), 3)


def _norm(vector: Sequence[float]) -> float:
    array = np.asarray(vector, dtype=np.float64)
    return float(np.linalg.norm(array)) if np.isfinite(array).all() else 0.0


def _unit(vector: Sequence[float]) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float64)
    norm = _norm(vector)
    return array / norm if norm > 0 else np.zeros_like(array)
