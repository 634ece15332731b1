"""Long audio in shards, the object use case's side: the function stages the decoded audio and starts the Step
Functions state machine (``statemachine/fanout.asl.json``), whose steps (:mod:`diarization.service.fanout_steps`)
call the function back, one step per invocation.

A second way to route long work, beside the GPU endpoint (see README, "Long audio: fan-out"). The object use case
decodes the file, and when the predicted time does not fit the invocation (or FANOUT=always) it stages, in the work
bucket under the execution's name: the decoded samples (``audio.f32``, 16 kHz mono float32, so a shard reads its
samples with one ranged GET) and their facts (``audio.json``). It records a routing (engine ``stepfunctions``, the
same jobs-table record as a GPU routing, with the run's hints, voiceprints and version order) and starts the
execution named after the run (``inference_id_for``: the job id and the input version's digest, so two versions
never share a name or staged audio). The job then waits for the inference exactly like a routed GPU job.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from diarization.core.audio import DecodedAudio
from diarization.core.engine import peak_of
from diarization.core.hints import SpeakerHints
from diarization.core.voiceprints import Voiceprint
from diarization.fanout.plan import AUDIO_FACTS_OBJECT, AUDIO_OBJECT, FAILURE_OBJECT, RESULT_OBJECT
from diarization.service.locations import ObjectRef
from diarization.service.ordering import Order
from diarization.service.outcomes import Routed
from diarization.service.ports import FanOut, JobStore, Log, ObjectStore, Telemetry
from diarization.service.routing import STEPFUNCTIONS, Routing

MODES = ("auto", "always", "never")
"""FANOUT: ``auto`` fans out what does not fit one invocation; ``always`` every non-silent file (tests, small
deployments that prefer many short invocations); ``never`` turns it off without removing the state machine."""
ROUTES = ("fanout", "gpu")
"""LONG_AUDIO_ROUTE, when both the state machine and the GPU endpoint are deployed."""
DEFAULT_SHARD_SECONDS = 600.0
"""Audio per shard (FANOUT_SHARD_SECONDS): at the measured CPU speed (RTF ≈ 0.15–0.4) 10 minutes take 1.5–4 minutes,
far inside the 900 s invocation, while the per-invocation costs (model load, staging reads) stay small beside it."""


@dataclass(frozen=True)
class FanoutSettings:
    work_bucket: str
    mode: str = "auto"
    shard_seconds: float = DEFAULT_SHARD_SECONDS
    prefer_gpu: bool = False
    """LONG_AUDIO_ROUTE=gpu: with both deployed, long audio goes to the GPU endpoint instead."""


def work_key(name: str, relative: str) -> str:
    """A staged object of execution `name` (its prefix is the name: one run, one folder)."""
    return f"{name}/{relative}"


class StartFanout:
    """The object use case's side: stage a file for the fan-out and start the execution (whether a file fans out is
    ``diarization.service.long_audio``'s to say)."""

    def __init__(
        self, fanout: FanOut, settings: FanoutSettings, store: ObjectStore, log: Log, telemetry: Telemetry
    ) -> None:
        self.fanout = fanout
        self.settings = settings
        self.store = store
        self.log = log
        self.telemetry = telemetry

    def __call__(
        self,
        jobs: JobStore,
        name: str,
        routing: Routing,
        audio: DecodedAudio,
        decode_seconds: float,
        reason: str,
    ) -> Routed:
        """Stage, record, start: in this order, so a step never runs without its record and objects. A second start
        of the same run (a redelivery racing the first) rewrites the staged objects with the same bytes and finds the
        execution started."""
        bucket = self.settings.work_bucket
        samples = np.ascontiguousarray(audio.samples, dtype="<f4")
        facts = {
            "sample_rate": audio.sample_rate,
            "num_samples": int(samples.shape[0]),
            "peak": peak_of(samples),
            "decode_seconds": round(decode_seconds, 3),
            "facts": asdict(audio.facts),
        }
        raw = io.BufferedReader(ArrayReader(samples), buffer_size=8 * 1024 * 1024)
        self.store.put_stream(bucket, work_key(name, AUDIO_OBJECT), raw, "application/octet-stream")
        self.store.put_json(bucket, work_key(name, AUDIO_FACTS_OBJECT), facts)
        jobs.record_routing(routing)
        started = self.fanout.start(name)
        self.telemetry.metric("FannedOut", "Count", 1)
        self.log.info(
            "fanned out: %s", reason, extra={"execution": name, "started": started, "samples": facts["num_samples"]}
        )
        return Routed(
            input=routing.ref.uri,
            version_id=routing.ref.version_id,
            etag=routing.ref.etag,
            endpoint=self.fanout.state_machine,
            reason=reason,
            duration_seconds=round(audio.duration_seconds, 3),
            inference_id=name,
            output_location=routing.output_location,
            failure_location=routing.failure_location,
        )

    def routing(
        self,
        name: str,
        ref: ObjectRef,
        hints: SpeakerHints,
        formats: tuple[str, ...],
        voiceprints: tuple[Voiceprint, ...],
        order: Order,
    ) -> Routing:
        work = f"s3://{self.settings.work_bucket}/"
        return Routing(
            inference_id=name,
            ref=ref,
            output_location=work + work_key(name, RESULT_OBJECT),
            failure_location=work + work_key(name, FAILURE_OBJECT),
            formats=formats,
            voiceprints=voiceprints,
            engine=STEPFUNCTIONS,
            hints=hints,
            order=order,
        )


class ArrayReader(io.RawIOBase):
    """The samples' bytes as a file, without a copy of the whole array (hours of audio are gigabytes)."""

    def __init__(self, samples: np.ndarray) -> None:
        self.view = samples.data.cast("B")
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), len(self.view) - self.position)
        buffer[:count] = self.view[self.position : self.position + count]
        self.position += count
        return count
