"""Routing long audio to the GPU: SageMaker asynchronous inference on the same core.

Lambda stops at 15 minutes and has no GPU. A file the long-audio policy sends here
(``diarization.service.long_audio``: above GPU_THRESHOLD_SECONDS, or its estimated processing would not fit the
invocation's remaining time) is submitted to the endpoint with its S3 location (InvokeEndpointAsync); the completion
handler writes the standard result when SageMaker reports back. Where the work ran shows in the result's
`model.device` and `timings` only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import boto3

from diarization.core.hints import SpeakerHints
from diarization.service.locations import ObjectRef

INVOCATION_TIMEOUT_SECONDS = 3600
"""How long the container may take for one file (SageMaker's maximum)."""


class SageMakerRouter:
    def __init__(self, endpoint_name: str, client: Any | None = None) -> None:
        self.endpoint_name = endpoint_name
        self.client = client or boto3.client("sagemaker-runtime")

    def submit(
        self, ref: ObjectRef, hints: SpeakerHints, inference_id: str, *, speaker_embeddings: bool = False
    ) -> dict[str, Any]:
        """The endpoint reads the object itself: nothing but its location crosses from Lambda.

        `speaker_embeddings` asks for the centroids in the output through CustomAttributes, which SageMaker (and
        infra/local_sagemaker.py) hands to the container unchanged: an opt-in like the server's JSON requests have,
        so outputs without voiceprints to match stay small, and the voiceprints themselves never leave Lambda."""
        attributes = [f"input_uri={quote(ref.uri, safe='')}"]
        attributes += [f"{name}={value}" for name, value in hints.as_pipeline_kwargs().items()]
        if speaker_embeddings:
            attributes.append("speaker_embeddings=true")  # the JSON requests' field name
        response = self.client.invoke_endpoint_async(
            EndpointName=self.endpoint_name,
            InputLocation=ref.uri,
            ContentType="application/octet-stream",
            Accept="application/json",
            CustomAttributes=",".join(attributes),
            InferenceId=inference_id,
            InvocationTimeoutSeconds=INVOCATION_TIMEOUT_SECONDS,
        )
        return {
            "inference_id": response.get("InferenceId", inference_id),
            "output_location": response.get("OutputLocation"),
            "failure_location": response.get("FailureLocation"),
        }
