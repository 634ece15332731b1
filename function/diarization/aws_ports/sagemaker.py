"""Routing long audio to the GPU: SageMaker asynchronous inference on the same core.

Lambda stops at 15 minutes and has no GPU. A file whose decoded duration exceeds GPU_THRESHOLD_SECONDS,
or whose estimated processing would not fit the invocation's remaining time, is submitted to the
endpoint with its S3 location (InvokeEndpointAsync); the completion handler writes the standard result
when SageMaker reports back. Where the work ran shows in the result's `model.device` and `timings` only.
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
    def __init__(self, endpoint_name: str, threshold_seconds: float, client: Any | None = None) -> None:
        self.endpoint_name = endpoint_name
        self.threshold_seconds = threshold_seconds
        self.client = client or boto3.client("sagemaker-runtime")

    def reason(self, audio_seconds: float, estimated_seconds: float, available_seconds: float | None) -> str | None:
        """Why this file should go to the GPU (None: Lambda takes it). `available_seconds` is after the margin."""
        if audio_seconds > self.threshold_seconds:
            return f"{audio_seconds:.0f} s of audio is above GPU_THRESHOLD_SECONDS={self.threshold_seconds:.0f}"
        if available_seconds is not None and estimated_seconds > available_seconds:
            return f"about {estimated_seconds:.0f} s of work does not fit the {available_seconds:.0f} s left"
        return None

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
