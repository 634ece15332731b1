"""End work that is past its deadline, so no job stays "running" and no input stays without an outcome.

Failures that escape the handler are mostly caught elsewhere (the dead-letter-queue consumer, the completion
handler), but some leave nothing to react to: a GPU inference whose notification never comes (lost, refused as
untrusted, an endpoint deleted meanwhile), a Lambda run whose message was deleted by hand. A scheduled sweep asks
the job store for running jobs and routed inferences whose deadline has passed and ends each one: the error object
JOB_DEADLINE_EXCEEDED for its input, written like any other outcome (ordered: never over a newer version's outputs
or this version's success), and a failed job. Every step is conditional, so a report that arrives at the same
moment, or a second sweep, changes nothing twice.
"""

from __future__ import annotations

import datetime

from diarization.errors import (
    AccessDeniedError,
    DiarizationError,
    InputChangedError,
    InputNotFoundError,
    InvalidParameterError,
    JobDeadlineExceededError,
)
from diarization.service.deps import Shared, UseCase
from diarization.service.locations import ObjectRef, parse_s3_uri
from diarization.service.model import Invocation
from diarization.service.ordering import SUPERSEDED, order_of
from diarization.service.outcomes import Failed, Outcome, Skipped, Succeeded, with_job
from diarization.service.routing import STEPFUNCTIONS, Routing

DEFAULT_JOB_DEADLINE_SECONDS = 32400
"""A job run in Lambda: the work queue's worst case with the template's defaults. Each of the 5 receives
(maxReceiveCount) hides the message for the 5,400 s visibility timeout (6 x the 900 s function timeout), so the last
delivery ends at most 5 x 5,400 s after the first start; one more visibility timeout of margin covers the
dead-letter consumer and throttling: 6 x 5,400 s = 9 h."""
DEFAULT_GPU_DEADLINE_SECONDS = 27000
"""A routed inference: SageMaker's own limits for an asynchronous request, 21,600 s in its queue (RequestTTLSeconds,
default and maximum) plus 3,600 s of processing (InvocationTimeoutSeconds, as routed), plus 1,800 s for the
notification: 7.5 h. An endpoint scaled to zero with a backlog can legitimately take hours to start a request."""
DEFAULT_FANOUT_DEADLINE_SECONDS = 14400
"""A fan-out execution (FANOUT_DEADLINE_SECONDS, its own: it neither queues like SageMaker nor is redelivered like a
Lambda run): 4 h. Its worst case with the template's defaults is a few rounds of 900 s invocations (the plan, the
shards in waves of MapMaxConcurrency, the reduce, the publish), each retried at most 3 times with backoff; 4 h covers
a 4 h file's 24 shards at concurrency 8 (3 waves) with every attempt used, and the sweep then ends what is left."""

LATE = {
    "lambda": (
        "{uri} was still being processed at its deadline ({deadline}): every delivery ended without an answer "
        "(the function timed out, ran out of memory or was stopped). Upload it again, or raise the function's "
        "memory or timeout."
    ),
    "gpu": (
        "{uri} was routed to the GPU endpoint (inference {inference_id}), which had not reported back by the "
        "deadline ({deadline}). Check the endpoint's logs and async output; upload the file again to retry."
    ),
    "fanout": (
        "{uri} was fanned out to the Step Functions state machine (execution {inference_id}), which had not reported "
        "back by the deadline ({deadline}). Check the execution's history; upload the file again to retry."
    ),
}


class EndOverdueJobs(UseCase):
    def __init__(self, shared: Shared) -> None:
        super().__init__(shared)
        self.jobs = shared.require_jobs()

    def __call__(self, now: float, invocation: Invocation) -> list[Outcome]:
        """`now` (Unix seconds) is passed in: the sweep's clock, and a test's way to be hours later at once.
        Routings first: ending one ends the jobs waiting for it, which then are no longer running."""
        outcomes: list[Outcome] = []
        for routing in self.jobs.overdue_routings(now):
            outcomes += self._end_routing(routing, invocation)
        for job_id in self.jobs.overdue_jobs(now):
            ended = self._end_job(job_id, now, invocation)
            if ended is not None:
                outcomes.append(ended)
        if outcomes:
            self.telemetry.metric("OverdueJobsEnded", "Count", len(outcomes))
        return outcomes

    def _end_routing(self, routing: Routing, invocation: Invocation) -> list[Outcome]:
        where = "fanout" if routing.engine == STEPFUNCTIONS else "gpu"
        error = _late(where, routing.ref.uri, routing.deadline, inference_id=routing.inference_id)
        outcome = self._publish(routing.ref, error, invocation, routing.inference_id)
        self.log.warning("ended an overdue routed inference", extra={"inference_id": routing.inference_id})
        waiting = self.jobs.end_inference(routing.inference_id, outcome.to_dict())
        ended: list[Outcome] = [outcome]
        for job_id in waiting:
            job_outcome = with_job(_job_outcome(outcome, routing.ref, error, routing.inference_id), job_id)
            if self.jobs.finish(job_id, job_outcome.to_dict()):
                ended.append(job_outcome)
        return ended

    def _end_job(self, job_id: str, now: float, invocation: Invocation) -> Outcome | None:
        job = self.jobs.get(job_id)
        # The index lags behind the table: a job that has just ended, or whose deadline moved, is left alone.
        if job is None or job.get("status") != "running" or not float(job.get("deadline") or now) < now:
            return None
        error = _late("lambda", str(job.get("input")), job.get("deadline"))
        try:
            ref: ObjectRef | None = parse_s3_uri(job.get("input"))
        except InvalidParameterError:  # only a job item made by hand has no valid input: it still ends
            ref = None
        outcome = (
            self._publish(ref, error, invocation, None)
            if ref
            else Skipped(input=str(job.get("input")), reason="the job names no valid input")
        )
        job_outcome = with_job(_job_outcome(outcome, ref, error, None), job_id)
        if not self.jobs.end_overdue(job_id, job_outcome.to_dict(), now):
            return None
        self.log.warning("ended an overdue job", extra={"job_id": job_id, "error_code": error.code})
        return job_outcome

    def _publish(
        self, ref: ObjectRef, error: DiarizationError, invocation: Invocation, inference_id: str | None
    ) -> Failed | Skipped | Succeeded:
        """The error object for the version the work was about (the routed one, else the current one), ordered by
        its Last-Modified time: a newer version, or a success of this one, keeps its outputs."""
        try:
            _, exact = self.store.head(ref)
        except InputChangedError:
            return Skipped(input=ref.uri, reason=SUPERSEDED)  # overwritten since: the new version has its own run
        except (InputNotFoundError, AccessDeniedError):
            location = self.locations.error_location(ref)
            return self.publisher.failed(ref, location, error, invocation.request_id, inference_id)
        location = self.locations.error_location(exact)
        return self.publisher.failed(exact, location, error, invocation.request_id, inference_id, order_of(exact, None))


def _late(where: str, uri: str, deadline: float | None, inference_id: str | None = None) -> JobDeadlineExceededError:
    seconds = int(deadline or 0)
    when = datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")
    message = LATE[where].format(uri=uri, deadline=when, inference_id=inference_id)
    details = {"deadline": seconds, "where": where}
    return JobDeadlineExceededError(message, **details, **({"inference_id": inference_id} if inference_id else {}))


def _job_outcome(
    outcome: Failed | Skipped | Succeeded, ref: ObjectRef | None, error: DiarizationError, inference_id: str | None
) -> Failed | Succeeded:
    """What the job says: the error, with the error object's location when one was written (a skipped write means
    a newer version owns the outputs); or the success of this version, whose result was written by a run that died
    before it could end the job."""
    if isinstance(outcome, Failed | Succeeded):
        return outcome
    return Failed(
        input=ref.uri if ref else outcome.input,
        version_id=ref.version_id if ref else None,
        error=error.to_dict(),
        inference_id=inference_id,
    )
