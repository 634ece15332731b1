"""Deployment settings of the Lambda function, validated once at init (see README, "The Lambda function")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from diarization.errors import ConfigurationError, UnknownFormatError
from diarization.outputs.formats import DEFAULT_OUTPUT_FORMATS, parse_formats
from diarization.service.fanout import DEFAULT_SHARD_SECONDS, MODES, ROUTES
from diarization.service.overdue import (
    DEFAULT_FANOUT_DEADLINE_SECONDS,
    DEFAULT_GPU_DEADLINE_SECONDS,
    DEFAULT_JOB_DEADLINE_SECONDS,
)


@dataclass(frozen=True)
class AwsSettings:
    input_bucket: str | None = None
    """The bucket the API accepts `s3_uri`s from and issues upload URLs for (INPUT_BUCKET)."""
    input_prefix: str = "audio/"
    output_bucket: str | None = None
    """None: results go to the bucket the input came from."""
    output_prefix: str = "results/"
    output_formats: tuple[str, ...] = DEFAULT_OUTPUT_FORMATS
    """Written beside each JSON result unless a job names its own (OUTPUT_FORMATS, comma-separated)."""
    idempotency_table: str | None = None
    jobs_table: str | None = None
    ordering_table: str | None = None
    """Per-key ordering records (see diarization.service.ordering); None: only the current-version check."""
    event_bus_name: str | None = None
    work_queue_url: str | None = None
    dead_letter_queue_arn: str | None = None
    """Messages from this queue are given up on (error object, failed job), not processed again."""
    """Where POST /jobs with an `s3_uri` enqueues work (the queue the bucket notifies)."""
    expected_real_time_factor: float = 0.6
    """Seconds of processing per second of audio assumed before this container has measured its own."""
    deadline_margin_seconds: float = 20.0
    sync_budget_seconds: float = 25.0
    """POST /diarize answers synchronously only if the estimate fits (API Gateway stops at 30 s)."""
    url_expiry_seconds: int = 3600
    job_ttl_days: int = 30
    sagemaker_endpoint_name: str | None = None
    """Route long audio to this SageMaker asynchronous endpoint (None: Lambda handles everything it can)."""
    gpu_threshold_seconds: float = 1800.0
    job_deadline_seconds: float = DEFAULT_JOB_DEADLINE_SECONDS
    """A job still running this long after its first start is ended by the overdue-job sweep."""
    gpu_deadline_seconds: float = DEFAULT_GPU_DEADLINE_SECONDS
    """A routed inference without a report this long after its submission is ended by the sweep."""
    fanout_state_machine_arn: str | None = None
    """Fan long audio out to this Step Functions state machine (None: no fan-out); see diarization.service.fanout."""
    fanout_work_bucket: str | None = None
    """Where the fan-out stages the decoded audio and its intermediate objects (FANOUT_WORK_BUCKET)."""
    fanout: str = "auto"
    fanout_shard_seconds: float = DEFAULT_SHARD_SECONDS
    long_audio_route: str = "fanout"
    """With both the state machine and the GPU endpoint deployed: which one takes long audio (LONG_AUDIO_ROUTE)."""
    fanout_deadline_seconds: float = DEFAULT_FANOUT_DEADLINE_SECONDS
    """A fan-out execution without a report this long after its start is ended by the sweep."""
    drop_voiceprint_owner: str | None = None
    drop_voiceprints: tuple[str, ...] = ()
    """Objects dropped into the bucket without a job are matched against these voiceprints of that owner."""
    voiceprint_prefix: str = "voiceprints/"
    """Callers' voiceprints, in the output bucket (else the input bucket): ``{prefix}{owner hash}/{name}.json``."""

    def voiceprint_location(self) -> tuple[str, str]:
        """(bucket, prefix) of the voiceprints, checked when first used so deployments without them are unaffected.

        Inside the input prefix they would be diarized as audio; inside the output prefix they would share keys
        with results. Either way an input's name could overwrite them.
        """
        bucket = self.output_bucket or self.input_bucket
        if bucket is None:
            raise ConfigurationError("Neither OUTPUT_BUCKET nor INPUT_BUCKET is set: voiceprints have no bucket.")
        clashes = [("OUTPUT_PREFIX", self.output_prefix)]
        if bucket == self.input_bucket:
            clashes.append(("INPUT_PREFIX", self.input_prefix))
        for name, prefix in clashes:
            if self.voiceprint_prefix.startswith(prefix) or prefix.startswith(self.voiceprint_prefix):
                raise ConfigurationError(
                    f"VOICEPRINT_PREFIX={self.voiceprint_prefix!r} overlaps {name}={prefix!r} in s3://{bucket}: "
                    "choose separate folders (defaults: voiceprints/, audio/, results/)."
                )
        return bucket, self.voiceprint_prefix

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AwsSettings:
        env = os.environ if env is None else env
        problems: list[str] = []

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def number(name: str, default: float, minimum: float) -> float:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                problems.append(f"{name}={raw!r} is not a number.")
                return default
            if not minimum <= value < float("inf"):
                problems.append(f"{name}={raw} must be at least {minimum}.")
                return default
            return value

        input_prefix = env.get("INPUT_PREFIX", "audio/").strip()
        output_prefix = env.get("OUTPUT_PREFIX", "results/").strip()
        for name, prefix in (("INPUT_PREFIX", input_prefix), ("OUTPUT_PREFIX", output_prefix)):
            if prefix.startswith("/"):
                problems.append(f"{name}={prefix!r} must not start with '/': S3 keys have no leading slash.")
        if not output_prefix:
            problems.append("OUTPUT_PREFIX must not be empty: results would be indistinguishable from inputs.")
        output_formats: tuple[str, ...] = DEFAULT_OUTPUT_FORMATS
        if text("OUTPUT_FORMATS") is not None:
            try:
                output_formats = parse_formats(env["OUTPUT_FORMATS"], "OUTPUT_FORMATS")
            except UnknownFormatError as error:
                problems.append(error.message)
        input_bucket, output_bucket = text("INPUT_BUCKET"), text("OUTPUT_BUCKET")
        same_bucket = output_bucket is None or output_bucket == input_bucket
        if same_bucket and output_prefix and input_prefix.startswith(output_prefix):
            problems.append(
                f"INPUT_PREFIX={input_prefix!r} lies inside OUTPUT_PREFIX={output_prefix!r}: results would "
                "trigger the function again. Use separate prefixes (defaults: audio/ and results/)."
            )
        voiceprint_prefix = env.get("VOICEPRINT_PREFIX", "voiceprints/").strip()
        if not voiceprint_prefix.endswith("/") or voiceprint_prefix.startswith("/"):
            problems.append(f"VOICEPRINT_PREFIX={voiceprint_prefix!r} must be a folder: end in '/', not start with it.")
        drop_owner = text("DROP_VOICEPRINT_OWNER")
        drop_names = tuple(name.strip() for name in (text("DROP_VOICEPRINTS") or "").split(",") if name.strip())
        if bool(drop_owner) != bool(drop_names):
            problems.append(
                "DROP_VOICEPRINTS and DROP_VOICEPRINT_OWNER go together: the names are looked up in that owner's "
                "voiceprints (an API caller id, `{account id}:{principal id}`, or `anonymous`)."
            )
        choices = {}
        for name, allowed, default in (("FANOUT", MODES, "auto"), ("LONG_AUDIO_ROUTE", ROUTES, "fanout")):
            choices[name] = (text(name) or default).lower()
            if choices[name] not in allowed:
                problems.append(f"{name}={env[name]!r} must be one of {', '.join(allowed)}.")
                choices[name] = default
        settings = cls(
            fanout_state_machine_arn=text("FANOUT_STATE_MACHINE_ARN"),
            fanout_work_bucket=text("FANOUT_WORK_BUCKET"),
            fanout=choices["FANOUT"],
            fanout_shard_seconds=number("FANOUT_SHARD_SECONDS", DEFAULT_SHARD_SECONDS, 1.0),
            long_audio_route=choices["LONG_AUDIO_ROUTE"],
            fanout_deadline_seconds=number("FANOUT_DEADLINE_SECONDS", DEFAULT_FANOUT_DEADLINE_SECONDS, 60.0),
            drop_voiceprint_owner=drop_owner,
            drop_voiceprints=drop_names,
            voiceprint_prefix=voiceprint_prefix,
            input_bucket=input_bucket,
            input_prefix=input_prefix,
            output_bucket=output_bucket,
            output_prefix=output_prefix,
            output_formats=output_formats,
            idempotency_table=text("IDEMPOTENCY_TABLE"),
            jobs_table=text("JOBS_TABLE"),
            ordering_table=text("ORDERING_TABLE"),
            event_bus_name=text("EVENT_BUS_NAME"),
            work_queue_url=text("WORK_QUEUE_URL"),
            dead_letter_queue_arn=text("DEAD_LETTER_QUEUE_ARN"),
            expected_real_time_factor=number("EXPECTED_REAL_TIME_FACTOR", 0.6, 0.001),
            deadline_margin_seconds=number("DEADLINE_MARGIN_SECONDS", 20.0, 0.0),
            sync_budget_seconds=number("SYNC_BUDGET_SECONDS", 25.0, 1.0),
            url_expiry_seconds=int(number("URL_EXPIRY_SECONDS", 3600, 60)),
            job_ttl_days=int(number("JOB_TTL_DAYS", 30, 1)),
            sagemaker_endpoint_name=text("SAGEMAKER_ENDPOINT_NAME"),
            gpu_threshold_seconds=number("GPU_THRESHOLD_SECONDS", 1800.0, 0.0),
            job_deadline_seconds=number("JOB_DEADLINE_SECONDS", DEFAULT_JOB_DEADLINE_SECONDS, 60.0),
            gpu_deadline_seconds=number("GPU_DEADLINE_SECONDS", DEFAULT_GPU_DEADLINE_SECONDS, 60.0),
        )
        if settings.sagemaker_endpoint_name and not settings.jobs_table:
            problems.append(
                "SAGEMAKER_ENDPOINT_NAME is set without JOBS_TABLE: routed work is recorded there, and a GPU "
                "completion is only trusted if it matches its record."
            )
        if settings.fanout_state_machine_arn and not (settings.fanout_work_bucket and settings.jobs_table):
            problems.append(
                "FANOUT_STATE_MACHINE_ARN needs FANOUT_WORK_BUCKET (where the decoded audio is staged) and JOBS_TABLE "
                "(each step is checked against the routing recorded there)."
            )
        if problems:
            raise ConfigurationError(
                "Invalid configuration: " + " ".join(problems) + " See README.md, section The Lambda function.",
                problems=problems,
            )
        return settings
