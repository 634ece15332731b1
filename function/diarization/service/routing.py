"""What was routed (to the GPU endpoint, or fanned out to the Step Functions state machine), and whether a completion
notification matches it.

SageMaker's notification arrives through SNS; whoever can publish to the topic (or invoke the function) could
otherwise make the function copy any object it can read into the results, or write outputs for any key. So a
notification is acted on only if it names an inference this deployment routed, the exact input it routed (bucket
and key, still under the input bucket and prefix), and the output or failure location SageMaker gave for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diarization.core.hints import SpeakerHints
from diarization.core.voiceprints import Voiceprint
from diarization.errors import DiarizationError
from diarization.service.locations import Locations, ObjectRef, parse_s3_uri
from diarization.service.ordering import Order

SAGEMAKER = "sagemaker"
STEPFUNCTIONS = "stepfunctions"
"""`Routing.engine`: which long-audio path took the work (see README, "Long audio: fan-out")."""


@dataclass(frozen=True)
class Routing:
    """One inference sent to the GPU endpoint, or one fan-out execution (its name is the inference id). The job store
    fills in `submitted_at` and `deadline` (Unix seconds) when it records the routing, and `ended` once the inference
    has an outcome."""

    inference_id: str
    ref: ObjectRef
    output_location: str | None
    failure_location: str | None
    submitted_at: float | None = None
    deadline: float | None = None
    ended: bool = False
    formats: tuple[str, ...] | None = None
    """The outputs the completion writes beside the JSON (None: the deployment's OUTPUT_FORMATS)."""
    voiceprints: tuple[Voiceprint, ...] = ()
    """The run's voiceprints: the completion names the GPU result's speakers with them, as the Lambda path would."""
    engine: str = SAGEMAKER
    hints: SpeakerHints | None = None
    """Fan-out only: the run's hints, which its reduce step reads here (step events carry nothing to trust)."""
    order: Order | None = None
    """The routed version's order (None only in records made before routings kept it). A completion is published as
    that version and no other: the fan-out diarizes the staged decode of exactly that version, and a GPU report is
    accepted only while the routed version is current (see ``CompleteInference._routed``)."""


@dataclass(frozen=True)
class Completion:
    """A notification that passed the checks: the routed input, and where SageMaker put the answer."""

    routing: Routing
    completed: bool
    output_location: str | None
    failure_location: str | None
    failure_reason: str


def check_completion(
    notification: dict[str, Any], routing: Routing | None, locations: Locations
) -> tuple[Completion | None, str | None]:
    """The checked completion, or why the notification is not acted on."""
    if routing is None:
        return None, f"inference id {str(notification.get('inferenceId'))[:100]!r} was not routed by this deployment"
    request = notification.get("requestParameters")
    response = notification.get("responseParameters") or {}
    status = notification.get("invocationStatus")
    if not isinstance(request, dict) or not isinstance(response, dict) or status not in ("Completed", "Failed"):
        return None, "not a SageMaker async notification (requestParameters, responseParameters, invocationStatus)"
    try:
        named = parse_s3_uri(request.get("inputLocation"))
    except DiarizationError:
        return None, "inputLocation is not an s3:// URI"
    if (named.bucket, named.key) != (routing.ref.bucket, routing.ref.key):
        return None, f"inputLocation {named.uri[:300]!r} is not the input routed as {routing.inference_id!r}"
    outside = _outside_inputs(named, locations)
    if outside:
        return None, f"inputLocation {named.uri[:300]!r} is {outside}"
    output, failure = response.get("outputLocation"), response.get("failureLocation")
    if output is not None and output != routing.output_location:
        return None, f"outputLocation {str(output)[:300]!r} is not the one SageMaker gave when it was routed"
    if failure is not None and failure != routing.failure_location:
        return None, f"failureLocation {str(failure)[:300]!r} is not the one SageMaker gave when it was routed"
    reason = str(notification.get("failureReason") or "no reason given")
    return Completion(routing, status == "Completed", output, failure, reason), None


def _outside_inputs(ref: ObjectRef, locations: Locations) -> str | None:
    """The routed input is re-checked against the configuration: a record is no reason to write outside it."""
    bucket = locations.settings.input_bucket
    if bucket is not None and ref.bucket != bucket:
        return f"outside the input bucket {bucket!r}"
    return locations.skip_reason(ref)
