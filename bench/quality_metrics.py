"""Scoring with pyannote.metrics: diarization error and speech detection error, per file and pooled.

Conventions (stated on the page too):
- Overlapping speech is scored (``skip_overlap=False``) and only the UEM's region counts.
- "0.25 s collar" is the NIST md-eval convention: 0.25 s either side of every reference boundary is
  not scored. pyannote.metrics' ``collar`` is the collar's *total* width, so it gets 0.5.
- Rates are pooled over a group of files (sum of errors / sum of reference speech), not averaged per
  file, so a file with little speech cannot swing a group's figure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pyannote.core import Annotation, Timeline
from pyannote.metrics.detection import DetectionErrorRate
from pyannote.metrics.diarization import DiarizationErrorRate

COLLAR_SECONDS = 0.25
"""Unscored on each side of a reference boundary (md-eval's ``-c 0.25``)."""


@dataclass(frozen=True)
class Components:
    """Seconds of reference speech and of each kind of error; rates follow from these."""

    total: float
    missed: float
    false_alarm: float
    confusion: float = 0.0

    @property
    def error_rate(self) -> float:
        return (self.missed + self.false_alarm + self.confusion) / self.total if self.total else 0.0

    def rate(self, component: str) -> float:
        value: float = getattr(self, component)
        return value / self.total if self.total else 0.0

    def __add__(self, other: Components) -> Components:
        return Components(
            self.total + other.total,
            self.missed + other.missed,
            self.false_alarm + other.false_alarm,
            self.confusion + other.confusion,
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def diarization_components(
    reference: Annotation, hypothesis: Annotation, uem: Timeline, collar: float = 0.0
) -> Components:
    """DER components within ``uem``, overlap scored, ``collar`` s unscored either side of reference boundaries."""
    metric = DiarizationErrorRate(collar=2 * collar, skip_overlap=False)
    values = metric.compute_components(reference, hypothesis, uem=uem)
    return Components(
        total=values["total"],
        missed=values["missed detection"],
        false_alarm=values["false alarm"],
        confusion=values["confusion"],
    )


def detection_components(reference: Annotation, speech: Timeline, uem: Timeline) -> Components:
    """Speech detection error of ``speech`` against the reference's speech (who speaks is ignored), within ``uem``."""
    hypothesis = speech.to_annotation(generator="string", modality="speech")
    values = DetectionErrorRate(collar=0.0, skip_overlap=False).compute_components(reference, hypothesis, uem=uem)
    return Components(total=values["total"], missed=values["miss"], false_alarm=values["false alarm"])


def pooled(components: list[Components]) -> Components:
    """The sum over files (see the module docstring for why pooled, not averaged)."""
    total = Components(0.0, 0.0, 0.0, 0.0)
    for item in components:
        total = total + item
    return total


def speaker_count(annotation: Annotation, uem: Timeline) -> int:
    """Speakers with any speech inside the scored region."""
    return len(annotation.crop(uem).labels())
