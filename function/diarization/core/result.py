"""The result object, its JSON form (schema v1, ``schema/result-v1.json``) and RTTM.

Pure Python: adapters build, read and serialise results without importing torch
or pyannote. Times are seconds rounded to the millisecond.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1.1"
"""1.1 added the speakers' identity fields, `identification` and the opt-in `speaker_embeddings`."""
SCHEMA_DIR = Path(__file__).parents[1] / "schema"
"""The published schemas live at the package top (`diarization/schema`), beside the entry points that emit them."""

UNTRAINED_WARNING = (
    "UNTRAINED MODEL: produced with random weights (an offline test pipeline); "
    "the speakers and segments are not a meaningful diarization."
)
STAND_IN_WARNING = (
    "STAND-IN MODEL: trained networks that are not community-1's produced this result "
    "(model.stand_in says which); its accuracy is the stand-in's, measured in docs/QUALITY.md."
)


@dataclass(frozen=True)
class AudioFacts:
    """What the input was, before resampling (reported in the result)."""

    duration_seconds: float
    sample_rate: int
    channels: int
    codec: str
    container: str
    size_bytes: int


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    speaker: str

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class SpeakerIdentity:
    """What matching against voiceprints says about one speaker (see :mod:`diarization.core.voiceprints`)."""

    name: str | None
    similarity: float | None
    """Cosine similarity with the matched voiceprint, or with the closest one when anonymous."""
    confidence: float | None
    """See :func:`diarization.core.voiceprints.confidence`; None when anonymous."""


NO_IDENTITY = SpeakerIdentity(None, None, None)


@dataclass(frozen=True)
class Speaker:
    id: str
    speaking_seconds: float
    segment_count: int
    name: str | None = None
    similarity: float | None = None
    confidence: float | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    revision: str | None
    trained: bool
    pyannote_version: str
    torch_version: str
    cuda_version: str | None
    device: str
    device_name: str
    num_threads: int
    stand_in: str | None = None
    """What in the pipeline stands in for community-1's networks (trained, but not the product's model), or None."""
    embedding_precision: str = "fp32"
    """The embedding trunk's arithmetic: fp32, or bf16/fp16 where the model directory proved it agrees."""


@dataclass(frozen=True)
class Timings:
    decode_seconds: float
    diarize_seconds: float
    total_seconds: float
    real_time_factor: float
    """``total_seconds`` per second of audio: below 1 is faster than real time."""


@dataclass(frozen=True)
class DiarizationResult:
    input_uri: str
    """What was diarized, as the caller named it: a path, an s3:// URI, an upload's name."""
    audio: AudioFacts
    parameters: dict[str, int | None]
    segments: list[Segment]
    exclusive_segments: list[Segment]
    model: ModelInfo
    timings: Timings
    warnings: list[str] = field(default_factory=list)
    schema_version: str = SCHEMA_VERSION
    speaker_embeddings: Mapping[str, tuple[float, ...]] = field(default_factory=dict, repr=False)
    """Each speaker's centroid embedding (pyannote's ``speaker_embeddings``), by label; serialised only when
    ``include_embeddings`` is set, because they are large and most users want names, not vectors."""
    include_embeddings: bool = False
    identities: Mapping[str, SpeakerIdentity] = field(default_factory=dict)
    identification: Mapping[str, object] | None = None
    """What identification ran with (threshold, voiceprint names); None when no voiceprint was given."""

    @property
    def speakers(self) -> list[Speaker]:
        totals: dict[str, list[float]] = {}
        for segment in self.segments:
            totals.setdefault(segment.speaker, []).append(segment.duration)
        return [
            Speaker(
                id=label,
                speaking_seconds=round(sum(durations), 3),
                segment_count=len(durations),
                **asdict(self.identities.get(label, NO_IDENTITY)),
            )
            for label, durations in sorted(totals.items())
        ]

    @property
    def overlap_seconds(self) -> float:
        """Total time during which two or more speakers talk at once."""
        events = sorted([(s.start, 1) for s in self.segments] + [(s.end, -1) for s in self.segments])
        active, last, overlap = 0, 0.0, 0.0
        for time, delta in events:
            if active >= 2:
                overlap += time - last
            active += delta
            last = time
        return round(overlap, 3)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schema_version": self.schema_version,
            "input": {"uri": self.input_uri, "size_bytes": self.audio.size_bytes},
            "audio": {
                "duration_seconds": self.audio.duration_seconds,
                "original": {
                    "sample_rate": self.audio.sample_rate,
                    "channels": self.audio.channels,
                    "codec": self.audio.codec,
                    "container": self.audio.container,
                },
            },
            "parameters": dict(self.parameters),
            "speaker_count": len(self.speakers),
            "speakers": [asdict(speaker) for speaker in self.speakers],
            "segments": [asdict(segment) for segment in self.segments],
            "exclusive_segments": [asdict(segment) for segment in self.exclusive_segments],
            "overlap_seconds": self.overlap_seconds,
            "model": asdict(self.model),
            "timings": asdict(self.timings),
            "warnings": list(self.warnings),
        }
        if self.identification is not None:
            body["identification"] = dict(self.identification)
        if self.include_embeddings:
            body["speaker_embeddings"] = {
                speaker.id: [round(value, 7) for value in self.speaker_embeddings.get(speaker.id, ())]
                for speaker in self.speakers
            }
        return body

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False) + "\n"

    def to_rttm(self) -> str:
        return rttm_from_segments(self.input_uri, self.segments)


def rttm_from_segments(input_uri: str, segments: list[Segment]) -> str:
    """NIST RTTM, one SPEAKER line per segment; the file id is the input's base name."""
    file_id = rttm_file_id(input_uri)
    return "".join(
        f"SPEAKER {file_id} 1 {s.start:.3f} {s.duration:.3f} <NA> <NA> {s.speaker} <NA> <NA>\n" for s in segments
    )


def rttm_file_id(uri: str) -> str:
    """RTTM fields are space-separated: derive a whitespace-free id from the input's name."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return re.sub(r"\s+", "_", stem) or "audio"


def load_schema(name: str = "result-v1.json") -> dict[str, Any]:
    """A committed JSON schema: ``result-v1.json`` (results) or ``error-v1.json`` (error objects)."""
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text())
    return schema
