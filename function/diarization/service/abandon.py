"""Give up on an object whose message the function could not process (timeout, out of memory, an unmapped
error): after SQS's retries it is dead-lettered, and this use case, fed from the dead-letter queue, writes
the error object and fails the job, so nothing waits for a result that will not come.

It runs no diarization. The version is pinned and ordered like any run (see ``diarization.service.ordering``):
an older version, or a version that has already succeeded, keeps its outputs; a job that has already ended
keeps its state. A version that has already succeeded — the process died after writing the result, before
ending the job, and every redelivery found the first run still in progress — ends its job ``succeeded`` with
that result; a version a newer upload replaced ends its job failed with INPUT_CHANGED, naming the outputs
that describe the object now (see ``Publisher.failed``). A job that started on another upload (one run per job,
``JobStore.mark_running``) is left to its own run: only the dead-lettered object's error object is written.
"""

from __future__ import annotations

from diarization.errors import AccessDeniedError, DiarizationError, InputNotFoundError, KeyTooLongError
from diarization.service.deps import Shared, UseCase
from diarization.service.diarize_object import pin_version, runs_on
from diarization.service.model import Invocation, ObjectRequest
from diarization.service.ordering import order_of
from diarization.service.outcomes import Outcome, Skipped, with_job

GAVE_UP = (
    "{uri} could not be processed: every delivery ended without an answer (the function timed out, ran out of "
    "memory or failed unexpectedly; its logs have the request ids). Upload it again, or raise the function's "
    "memory or timeout, or route long audio to the GPU endpoint."
)


class AbandonObject(UseCase):
    def __init__(self, shared: Shared) -> None:
        super().__init__(shared)
        self.jobs = shared.jobs

    def __call__(self, request: ObjectRequest, invocation: Invocation, deliveries: int | None) -> Outcome:
        ref = request.ref
        reason = self.locations.skip_reason(ref)
        if reason:
            return Skipped(input=ref.uri, reason=reason)
        job_id = request.job_id or self.locations.job_id_of_upload(ref)
        gave_up = DiarizationError(GAVE_UP.format(uri=ref.uri), deliveries=deliveries)
        outcome: Outcome
        # A refused name (see diarization.service.locations) is reported as such: that is what a run would write.
        try:
            _, exact, sequencer = pin_version(self.store, request, self.log)
        except (InputNotFoundError, AccessDeniedError, KeyTooLongError):
            exact = ref
            error = self.locations.refusal(ref) or gave_up
            outcome = self.publisher.failed(ref, self.locations.error_location(ref), error, invocation.request_id)
        else:
            error = self.locations.refusal(exact) or gave_up
            outputs = self.locations.error_location(exact)
            order = order_of(exact, sequencer)
            outcome = self.publisher.failed(exact, outputs, error, invocation.request_id, order=order)
        job = self.jobs.get(job_id) if job_id and self.jobs else None
        if job_id and self.jobs and job is not None and runs_on(job, exact):  # a job runs once: on its own run
            outcome = with_job(outcome, job_id)
            self.jobs.finish(job_id, outcome.to_dict())
        return outcome
