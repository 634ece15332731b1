"""The fan-out state machine's tasks (``statemachine/fanout.asl.json``), one per invocation of the function.

``plan`` (the shard ranges on pyannote's own grid), ``shard`` (segmentation and embeddings of one range,
``shards/NNNNN.npz``), ``reduce`` (clustering and reconstruction of all parts, ``result.json``: what the GPU
endpoint's output is), ``publish`` (a SageMaker-shaped completion run through
:class:`~diarization.service.completion.CompleteInference`, so outputs, ordering, the job, events and webhooks are
the GPU completion's), ``fail`` (``failure.json`` in our server's error body, then the same completion as Failed).
What is staged, and when a file fans out: :mod:`diarization.service.fanout`.

Trust: a step event names the execution (and a shard index), nothing else; everything else comes from the routing
record and the staged objects. A name this deployment did not fan out is refused before anything is read or
written. Shard ranges are recomputed from the staged facts in every step, never taken from the state. A ``fail`` step's
error name selects one of our own error classes or FANOUT_FAILED, and its cause is only shown as text; whoever may
invoke the function at all can end a running fan-out with it, which is no more than they could do to the input by
invoking the function directly.

Errors: a step that fails unexpectedly (S3, a missing staged object, a bug) raises :class:`TransientStepError`, which
the state machine retries with backoff, as it retries a crashed runtime (``Lambda.Unknown``, which Step Functions
reports for out-of-memory kills and timeouts; ``Runtime.ExitError`` in case the runtime's own name comes through) and
Lambda's throttling and service errors; typed errors (``DiarizationError``) are not retried. What still fails goes
to the ``fail`` step: a typed error keeps its code, anything else becomes FANOUT_FAILED.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from diarization.core.engine import Diarizer
from diarization.core.hints import SpeakerHints
from diarization.core.result import AudioFacts
from diarization.errors import (
    ERROR_CODES,
    AccessDeniedError,
    DiarizationError,
    FanoutFailedError,
    InputNotFoundError,
    InvalidRequestError,
)
from diarization.fanout.plan import (
    AUDIO_FACTS_OBJECT,
    AUDIO_OBJECT,
    FAILURE_OBJECT,
    RESULT_OBJECT,
    SAMPLE_BYTES,
    ShardRange,
    shard_object,
)
from diarization.fanout.shards import compute_shard, grid_for, reduce_shards, shard_plan
from diarization.service.deps import Shared
from diarization.service.fanout import FanoutSettings, work_key
from diarization.service.model import Invocation
from diarization.service.routing import STEPFUNCTIONS, Routing

EXECUTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}\Z")
"""Step Functions' execution names (we make a job id, a hyphen and 16 hex digits, or 32 hex digits: see
``diarization.service.diarize_object.inference_id_for``): anything else was not started by us."""
STEPS = ("plan", "shard", "reduce", "publish", "fail")
T = TypeVar("T")


class TransientStepError(Exception):
    """An unexpected failure of one step (S3, a missing staged object, a bug): the state machine retries it with
    backoff (its ``errorType`` is this class's name), then ends the run with FANOUT_FAILED."""


class FanoutSteps:
    """The state machine's tasks. `complete` is the GPU path's completion use case (CompleteInference)."""

    def __init__(
        self,
        diarizer: Diarizer,
        settings: FanoutSettings,
        shared: Shared,
        complete: Callable[[dict[str, Any], Invocation], Any],
    ) -> None:
        self.diarizer = diarizer
        self.settings = settings
        self.store = shared.store
        self.jobs = shared.require_jobs()
        self.complete = complete
        self.log = shared.log

    def __call__(self, event: Mapping[str, Any], invocation: Invocation) -> dict[str, Any]:
        step, name = event.get("step"), event.get("execution")
        if step not in STEPS:
            raise InvalidRequestError(f"Unknown fan-out step {str(step)[:40]!r}; expected one of {list(STEPS)}.")
        routing = self._routing(name)
        try:
            if step == "plan":
                return {"shards": [shard.to_dict() for shard in self._plan(routing.inference_id)]}
            if step == "shard":
                return self._shard(routing.inference_id, event.get("index"))
            if step == "reduce":
                return self._reduce(routing)
            if step == "publish":
                return self._publish(routing, invocation)
            return self._fail(routing, event.get("error"), invocation)
        except DiarizationError:
            raise
        except Exception as error:
            raise TransientStepError(
                f"{step} step of {routing.inference_id}: {type(error).__name__}: {error}"
            ) from error

    def _routing(self, name: Any) -> Routing:
        """Refused before anything is read or written: a name this deployment did not fan out."""
        routing = self.jobs.routing(name) if isinstance(name, str) and EXECUTION_NAME.match(name) else None
        if routing is None or routing.engine != STEPFUNCTIONS:
            self.log.warning("fan-out step refused: no fan-out routing", extra={"execution": str(name)[:100]})
            raise InvalidRequestError(
                f"Execution {str(name)[:100]!r} was not fanned out by this deployment: the step is refused.",
                execution=str(name)[:100],
            )
        return routing

    def _facts(self, name: str) -> dict[str, Any]:
        return self._staged(lambda: self.store.get_json(self.settings.work_bucket, work_key(name, AUDIO_FACTS_OBJECT)))

    def _plan(self, name: str) -> tuple[ShardRange, ...]:
        """The shards of pyannote's grid for the staged audio: computed again by every step from the staged facts and
        this deployment's settings, so no step trusts ranges handed to it."""
        facts = self._facts(name)
        num_samples = int(facts["num_samples"])
        step = grid_for(self.diarizer, num_samples).step
        chunks = max(1, int(self.settings.shard_seconds * int(facts["sample_rate"]) // step))
        return shard_plan(self.diarizer, num_samples, chunks)

    def _shard(self, name: str, index: Any) -> dict[str, Any]:
        shards = self._plan(name)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(shards):
            raise InvalidRequestError(f"Shard index {str(index)[:20]!r} is not one of the {len(shards)} shards.")
        shard = shards[index]
        data = self._staged(
            lambda: self.store.get_range(
                self.settings.work_bucket,
                work_key(name, AUDIO_OBJECT),
                shard.sample_start * SAMPLE_BYTES,
                shard.sample_stop * SAMPLE_BYTES,
            )
        )
        body = compute_shard(self.diarizer, np.frombuffer(data, dtype="<f4"), shard)
        self.store.put_bytes(
            self.settings.work_bucket, work_key(name, shard_object(index)), body, "application/octet-stream"
        )
        return {"index": index, "chunks": shard.stop_chunk - shard.first_chunk}

    def _part(self, name: str, index: int) -> bytes:
        return self._staged(
            lambda: self.store.get_bytes(self.settings.work_bucket, work_key(name, shard_object(index)))
        )

    def _reduce(self, routing: Routing) -> dict[str, Any]:
        """The routed run's hints, and its voiceprints' matching left to the completion (as for a GPU result): the
        result carries the speakers' centroids when there is something to match them against."""
        name = routing.inference_id
        facts = self._facts(name)
        parts = [self._part(name, shard.index) for shard in self._plan(name)]
        result = reduce_shards(
            self.diarizer,
            parts,
            int(facts["num_samples"]),
            AudioFacts(**facts["facts"]),
            routing.hints or SpeakerHints(),
            routing.ref.uri,
            peak=float(facts["peak"]),
            decode_seconds=float(facts.get("decode_seconds", 0.0)),
            include_embeddings=bool(routing.voiceprints),
        )
        self.store.put_json(self.settings.work_bucket, work_key(name, RESULT_OBJECT), result.to_dict())
        return {"result": routing.output_location, "speakers": len(result.speakers)}

    def _publish(self, routing: Routing, invocation: Invocation) -> dict[str, Any]:
        outcome = self.complete(_notification(routing, "Completed"), invocation)
        return dict(outcome.to_dict())

    def _fail(self, routing: Routing, caught: Any, invocation: Invocation) -> dict[str, Any]:
        """The Catch's error (`Error`, `Cause`) becomes our server's error body at the failure location, then the
        completion reads it like a GPU failure's. The error name selects a typed error only by our own class names;
        the cause is shown as text, never interpreted further."""
        error = step_error(routing.inference_id, caught)
        body = {"error": error.to_dict()}
        self.store.put_json(self.settings.work_bucket, work_key(routing.inference_id, FAILURE_OBJECT), body)
        outcome = self.complete(_notification(routing, "Failed", error.message), invocation)
        return dict(outcome.to_dict())

    @staticmethod
    def _staged(read: Callable[[], T]) -> T:
        """A staged object that is missing or unreadable is not the input's fault: transient for the state machine
        (retried), then FANOUT_FAILED — never the INPUT_NOT_FOUND of the user's file."""
        try:
            return read()
        except (InputNotFoundError, AccessDeniedError) as error:
            raise TransientStepError(f"staged object unavailable: {error.message}") from error


NAMED_ERRORS: dict[str, type[DiarizationError]] = {kind.__name__: kind for kind in ERROR_CODES.values()}
"""Our typed errors by class name: the ``errorType`` Lambda reports for an exception raised in a step."""
MAX_MESSAGE = 1000


def step_error(name: str, caught: Any) -> DiarizationError:
    """The error a failed execution ends with: the typed error a step raised (its code, its message), else
    FANOUT_FAILED with Step Functions' error name and the step's message."""
    caught = caught if isinstance(caught, dict) else {}
    error_name = str(caught.get("Error") or "States.Runtime")[:200]
    cause = str(caught.get("Cause") or "")
    try:
        parsed = json.loads(cause)
        message = str(parsed.get("errorMessage") or cause) if isinstance(parsed, dict) else cause
    except ValueError:
        message = cause
    kind = NAMED_ERRORS.get(error_name)
    if kind is not None and kind is not DiarizationError:
        return kind(message.removeprefix(f"{kind.code}: ")[:MAX_MESSAGE], execution=name)
    return FanoutFailedError(
        f"The fan-out failed in Step Functions after its retries ({error_name}): {message[:MAX_MESSAGE]}",
        execution=name,
        step_error=error_name,
    )


def _notification(routing: Routing, status: str, reason: str = "") -> dict[str, Any]:
    """What SageMaker would send for this inference: the completion checks it against the routing record like any."""
    response = (
        {"outputLocation": routing.output_location}
        if status == "Completed"
        else {"failureLocation": routing.failure_location}
    )
    return {
        "eventSource": "aws:stepfunctions",
        "invocationStatus": status,
        "inferenceId": routing.inference_id,
        "requestParameters": {"inputLocation": routing.ref.uri},
        "responseParameters": response,
        "failureReason": reason,
    }
