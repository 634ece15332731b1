"""The use cases wired to the in-memory ports of support.fakes, as the unit tests build them: one object per test."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from diarization.aws.settings import AwsSettings
from diarization.core.capacity import MemoryBudget
from diarization.core.engine import Diarizer
from diarization.service.abandon import AbandonObject
from diarization.service.completion import CompleteInference
from diarization.service.deps import Shared
from diarization.service.diarize_object import DiarizeObject, SpeedEstimate
from diarization.service.fanout import FanoutSettings, StartFanout
from diarization.service.locations import Locations, ObjectRef
from diarization.service.model import ObjectRequest
from diarization.service.overdue import EndOverdueJobs
from diarization.service.publishing import Publisher
from support.fakes import (
    FakeFanOut,
    FakeRouter,
    MemoryJobs,
    MemoryNotifier,
    MemoryOrdering,
    MemoryStore,
    RecordingTelemetry,
)

BUCKET, WORK = "audio", "work"
log = logging.getLogger("tests.service")


@dataclass
class Service:
    store: MemoryStore
    jobs: MemoryJobs
    notifier: MemoryNotifier
    telemetry: RecordingTelemetry
    router: FakeRouter
    diarize_object: DiarizeObject
    complete: CompleteInference
    abandon: AbandonObject
    overdue: EndOverdueJobs
    fanout: FakeFanOut
    """What was fanned out (only with `make_service(fanout=...)`), staged in the bucket WORK."""


def make_service(
    diarizer: Diarizer,
    workdir: Path,
    versioned: bool = False,
    gpu_above: float = 1e9,
    memory: MemoryBudget | None = None,
    gpu: bool = True,
    fanout: str | None = None,
    prefer_gpu: bool = False,
) -> Service:
    """`fanout`: the fan-out's FANOUT mode (None: no fan-out deployed); `prefer_gpu`: LONG_AUDIO_ROUTE=gpu."""
    store, jobs, notifier = MemoryStore(versioned=versioned), MemoryJobs(), MemoryNotifier()
    telemetry, router, starter = RecordingTelemetry(), FakeRouter(), FakeFanOut()
    locations = Locations(AwsSettings(input_bucket=BUCKET))
    publisher = Publisher(store, notifier, log, telemetry, MemoryOrdering())
    shared = Shared(locations, store, publisher, jobs, log, telemetry)
    diarize_object = DiarizeObject(
        diarizer,
        shared,
        deadline_margin_seconds=5.0,
        speed=SpeedEstimate(0.5),
        workdir=workdir,
        router=router if gpu else None,
        gpu_threshold_seconds=gpu_above,
        memory=memory,
        fanout=StartFanout(starter, FanoutSettings(WORK, fanout, prefer_gpu=prefer_gpu), store, log, telemetry)
        if fanout
        else None,
    )
    complete, abandon, overdue = CompleteInference(shared), AbandonObject(shared), EndOverdueJobs(shared)
    return Service(store, jobs, notifier, telemetry, router, diarize_object, complete, abandon, overdue, starter)


def request(key: str, **fields: object) -> ObjectRequest:
    return ObjectRequest(ObjectRef(BUCKET, key), **fields)  # type: ignore[arg-type]


def notification(inference_id: str, input_uri: str, output: str | None, status: str = "Completed") -> dict:
    """`output` is the outputLocation of a success, the failureLocation of a failure."""
    response = {"outputLocation" if status == "Completed" else "failureLocation": output} if output else {}
    return {
        "invocationStatus": status,
        "inferenceId": inference_id,
        "requestParameters": {"inputLocation": input_uri},
        "responseParameters": response,
    }


TERMINAL = ("succeeded", "failed")


def assert_invariant(service: Service, inputs: str = "audio/") -> None:
    """tests/integration/test_faults.py's invariant on the in-memory ports: every input under `inputs` has exactly one
    of {result, error object} and it describes the input's current version (the error object by version id and ETag,
    the result by the size of what it read: a test's versions differ in size); every job has ended."""
    store = service.store
    for key in store.keys(BUCKET, inputs):
        name = key.removeprefix("audio/")
        outputs = set(store.keys(BUCKET, f"results/{name}."))
        has_result, has_error = f"results/{name}.json" in outputs, f"results/{name}.error.json" in outputs
        assert has_result != has_error, (key, outputs)
        size, current = store.head(ObjectRef(BUCKET, key))
        if has_error:
            described = store.get_json(BUCKET, f"results/{name}.error.json")["input"]
            assert (described["version_id"], described["etag"]) == (current.version_id, current.etag), (key, described)
        else:
            assert store.get_json(BUCKET, f"results/{name}.json")["input"]["size_bytes"] == size, key
    for job_id, job in service.jobs.jobs.items():
        assert job["status"] in TERMINAL, (job_id, job["status"])
