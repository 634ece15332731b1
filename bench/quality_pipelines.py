"""The pyannote pipelines the harness adds to the project's own: oracle clustering and speech detection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pyannote.audio import Pipeline
from pyannote.audio.pipelines import VoiceActivityDetection
from pyannote.audio.pipelines.clustering import OracleClustering
from pyannote.core import Annotation

from diarization.core.fastpath import accelerate


class NoSpeakerMatchedError(Exception):
    """Oracle clustering matched no local speaker of the segmentation to any reference speaker."""


class _OracleClustering(OracleClustering):  # type: ignore[misc]
    """pyannote's oracle clustering, stopping where every reference speaker was matched to a silent local speaker.

    The matching minimises frame disagreement, so a short reference turn goes to a local speaker that never speaks
    when the segmentation's speech is elsewhere (seen with random weights on trn02). pyannote then drops silent local
    speakers, is left with no cluster and fails in 4.0.7 ("negative dimensions"); the answer is an empty diarization.
    """

    def __call__(self, **kwargs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        hard_clusters, soft_clusters, centroids = super().__call__(**kwargs)
        active = np.nansum(kwargs["segmentations"].data, axis=1) > 0
        if not ((hard_clusters >= 0) & active).any():
            raise NoSpeakerMatchedError
        return hard_clusters, soft_clusters, centroids


class OracleDiarization:
    """The directory's pipeline with oracle clustering in place of its own.

    Built by swapping the clustering of a loaded pipeline: constructing ``SpeakerDiarization`` with
    ``clustering="OracleClustering"`` fails in pyannote 4.0.7 (it skips loading the embedding model
    that ``apply`` still calls), so embeddings are computed and then ignored. The fast path keeps
    that waste small.
    """

    def __init__(self, model_dir: Path) -> None:
        self.pipeline = Pipeline.from_pretrained(model_dir)
        accelerate(self.pipeline)
        self.pipeline.clustering = _OracleClustering(metric="not_applicable")

    def __call__(self, file: dict[str, Any], num_speakers: int) -> Annotation:
        """``file`` carries the reference as ``annotation``."""
        try:
            return self.pipeline(dict(file), num_speakers=num_speakers).speaker_diarization
        except NoSpeakerMatchedError:
            return Annotation(uri=file["uri"])


def speech_detection(segmentation: Any) -> Any:
    """Voice activity from the segmentation model alone: speech wherever any local speaker is active.

    No post-processing (no minimum durations), and 0.5 on the probability for a model without a
    powerset head (a powerset model's decision is its most likely class, so it has no threshold).
    """
    pipeline = VoiceActivityDetection(segmentation=segmentation)
    params: dict[str, float] = {"min_duration_on": 0.0, "min_duration_off": 0.0}
    if not segmentation.specifications.powerset:
        params.update(onset=0.5, offset=0.5)
    pipeline.instantiate(params)
    return pipeline
