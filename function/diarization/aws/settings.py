"""Deployment settings of the Lambda function, validated once at init (``AWS_TABLE``; docs/configuration.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from diarization.core.environment import Kind, Table, Variable, read
from diarization.errors import ConfigurationError
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
        values, problems = read(AWS_TABLE, os.environ if env is None else env)
        settings = cls(**values)  # type: ignore[arg-type]
        problems += prefix_problems(settings) + pairing_problems(settings)
        if problems:
            raise AWS_TABLE.error(problems)
        return settings


def prefix_problems(settings: AwsSettings) -> list[str]:
    """The key prefixes keep inputs, results and voiceprints apart, without leading slashes."""
    problems = [
        f"{name}={prefix!r} must not start with '/': S3 keys have no leading slash."
        for name, prefix in (("INPUT_PREFIX", settings.input_prefix), ("OUTPUT_PREFIX", settings.output_prefix))
        if prefix.startswith("/")
    ]
    input_prefix, output_prefix = settings.input_prefix, settings.output_prefix
    if not output_prefix:
        problems.append("OUTPUT_PREFIX must not be empty: results would be indistinguishable from inputs.")
    same_bucket = settings.output_bucket is None or settings.output_bucket == settings.input_bucket
    if same_bucket and output_prefix and input_prefix.startswith(output_prefix):
        problems.append(
            f"INPUT_PREFIX={input_prefix!r} lies inside OUTPUT_PREFIX={output_prefix!r}: results would "
            "trigger the function again. Use separate prefixes (defaults: audio/ and results/)."
        )
    voiceprint_prefix = settings.voiceprint_prefix
    if not voiceprint_prefix.endswith("/") or voiceprint_prefix.startswith("/"):
        problems.append(f"VOICEPRINT_PREFIX={voiceprint_prefix!r} must be a folder: end in '/', not start with it.")
    return problems


def pairing_problems(settings: AwsSettings) -> list[str]:
    """Variables that need others: the drop voiceprints and their owner, routed work and its records."""
    problems = []
    if bool(settings.drop_voiceprint_owner) != bool(settings.drop_voiceprints):
        problems.append(
            "DROP_VOICEPRINTS and DROP_VOICEPRINT_OWNER go together: the names are looked up in that owner's "
            "voiceprints (an API caller id, `{account id}:{principal id}`, or `anonymous`)."
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
    return problems


AWS_TABLE = Table(
    title="Lambda function settings",
    see="docs/configuration.md",
    variables=(
        Variable(
            "INPUT_BUCKET",
            "input_bucket",
            Kind.TEXT,
            "—",
            "The bucket the API accepts `s3_uri`s from and issues upload URLs for.",
        ),
        Variable("INPUT_PREFIX", "input_prefix", Kind.PREFIX, "`audio/`", "Only keys under it are inputs."),
        Variable("OUTPUT_BUCKET", "output_bucket", Kind.TEXT, "the input's bucket", "Where results go."),
        Variable(
            "OUTPUT_PREFIX",
            "output_prefix",
            Kind.PREFIX,
            "`results/`",
            "Results, their formats and error objects go under it. At most 935 bytes, so the `_key-too-long/` "
            "fallback fits.",
        ),
        Variable(
            "OUTPUT_FORMATS",
            "output_formats",
            Kind.PARSED,
            f"`{','.join(DEFAULT_OUTPUT_FORMATS)}`",
            "Comma-separated [formats](cli.md#output-formats-and-the-timeline-picture) written beside each JSON "
            "result: `rttm`, `srt`, `vtt`, `csv`, `pyannote`, `pyannoteai`, `svg`, `png` (`json` alone: none). A "
            "job's `formats` replaces it; S3/SQS/EventBridge events use it. An unknown name is a "
            "`CONFIGURATION_ERROR` at init. Template parameter `OutputFormats`.",
            parse=lambda raw: parse_formats(raw, "OUTPUT_FORMATS"),
        ),
        Variable(
            "VOICEPRINT_PREFIX",
            "voiceprint_prefix",
            Kind.PREFIX,
            "`voiceprints/`",
            "Callers' voiceprints, in the output bucket (else the input bucket). Must not overlap the input or "
            "output prefix (it would be diarized, or share keys with results): the voiceprint routes answer "
            "`CONFIGURATION_ERROR` then.",
        ),
        Variable(
            "DROP_VOICEPRINT_OWNER",
            "drop_voiceprint_owner",
            Kind.TEXT,
            "—",
            "With `DROP_VOICEPRINTS` (both or neither): objects arriving without a job are matched against those "
            "voiceprints of this owner (an API caller id, `{account id}:{principal id}`, or `anonymous`).",
        ),
        Variable(
            "DROP_VOICEPRINTS",
            "drop_voiceprints",
            Kind.LIST,
            "—",
            "Comma-separated names of the `DROP_VOICEPRINT_OWNER`'s voiceprints that objects arriving without a job "
            "are matched against.",
        ),
        Variable(
            "IDEMPOTENCY_TABLE",
            "idempotency_table",
            Kind.TEXT,
            "—",
            "DynamoDB table (key `id`, TTL `expiration`) for Powertools idempotency.",
        ),
        Variable(
            "JOBS_TABLE",
            "jobs_table",
            Kind.TEXT,
            "—",
            "DynamoDB table (key `job_id`, TTL `expires_at`, sparse index `running-by-deadline` on `running` + "
            "`deadline`) for the API's jobs and the routings (GPU and fan-out).",
        ),
        Variable(
            "ORDERING_TABLE",
            "ordering_table",
            Kind.TEXT,
            "—",
            "DynamoDB table (key `object`, no TTL) of per-key ordering records (see "
            "[Ordering](lambda.md#where-results-go)).",
        ),
        Variable(
            "WORK_QUEUE_URL", "work_queue_url", Kind.TEXT, "—", "Where `POST /jobs` with an `s3_uri` enqueues work."
        ),
        Variable(
            "DEAD_LETTER_QUEUE_ARN",
            "dead_letter_queue_arn",
            Kind.TEXT,
            "—",
            "The work queue's DLQ. Messages from it are given up on, not processed again: each object gets an "
            "`INTERNAL_ERROR` error object (`details.deliveries`) and its job fails — unless the job has already "
            "ended, a newer version owns the outputs (the job fails with `INPUT_CHANGED`), or the same version has "
            "succeeded (the process died after writing the result: the job ends `succeeded` with it).",
        ),
        Variable(
            "EVENT_BUS_NAME",
            "event_bus_name",
            Kind.TEXT,
            "—",
            "Publish `Diarization Succeeded` / `Diarization Failed` (source `serverless-diarization`, detail = the "
            "outcome) to this bus. Best effort: a failed publish is logged, never a reason to re-run.",
        ),
        Variable(
            "EXPECTED_REAL_TIME_FACTOR",
            "expected_real_time_factor",
            Kind.NUMBER,
            "`0.6`",
            "Seconds of processing per second of audio assumed before the container has measured its own. The fast "
            "path measured 0.56 on one thread and 0.29 on two in fp32, 0.31 and 0.15 with the bf16 trunk "
            "([docs/BENCHMARKS.md](BENCHMARKS.md)); its cost is per 10 s chunk, so it hardly depends on the content.",
            minimum=0.001,
        ),
        Variable(
            "DEADLINE_MARGIN_SECONDS",
            "deadline_margin_seconds",
            Kind.NUMBER,
            "`20`",
            "Time kept free at the end of an invocation.",
            minimum=0.0,
        ),
        Variable(
            "SYNC_BUDGET_SECONDS",
            "sync_budget_seconds",
            Kind.NUMBER,
            "`25`",
            "`POST /diarize` answers only work estimated below this.",
            minimum=1.0,
        ),
        Variable(
            "URL_EXPIRY_SECONDS",
            "url_expiry_seconds",
            Kind.WHOLE_PART,
            "`3600`",
            "Lifetime of presigned URLs.",
            minimum=60,
        ),
        Variable(
            "JOB_TTL_DAYS",
            "job_ttl_days",
            Kind.WHOLE_PART,
            "`30`",
            "Jobs are deleted (DynamoDB TTL) after this.",
            minimum=1,
        ),
        Variable(
            "SAGEMAKER_ENDPOINT_NAME",
            "sagemaker_endpoint_name",
            Kind.TEXT,
            "—",
            "Route long audio to this asynchronous endpoint (see [Long audio on a "
            "GPU](long-audio.md#long-audio-on-a-gpu-sagemaker-asynchronous-inference)). Needs `JOBS_TABLE` (a "
            "`CONFIGURATION_ERROR` at init otherwise): routings are recorded there.",
        ),
        Variable(
            "GPU_THRESHOLD_SECONDS",
            "gpu_threshold_seconds",
            Kind.NUMBER,
            "`1800`",
            "Audio longer than this goes to the GPU endpoint when one is configured.",
            minimum=0.0,
        ),
        Variable(
            "FANOUT_STATE_MACHINE_ARN",
            "fanout_state_machine_arn",
            Kind.TEXT,
            "—",
            "Fan long audio out to this state machine, staging it in `FANOUT_WORK_BUCKET` (see [Long audio: "
            "fan-out](long-audio.md#long-audio-fan-out)). Needs `FANOUT_WORK_BUCKET` and `JOBS_TABLE` (a "
            "`CONFIGURATION_ERROR` at init otherwise).",
        ),
        Variable(
            "FANOUT_WORK_BUCKET",
            "fanout_work_bucket",
            Kind.TEXT,
            "—",
            "Where the fan-out (`FANOUT_STATE_MACHINE_ARN`) stages the decoded audio and its intermediate objects.",
        ),
        Variable(
            "FANOUT",
            "fanout",
            Kind.CHOICE,
            "`auto`",
            "`auto`: fan out what does not fit the invocation; `always`: every non-silent file (tests, small "
            "deployments); `never`: off. Template parameter `FanOut` (`never` deploys neither the machine nor its "
            "bucket).",
            choices=MODES,
        ),
        Variable(
            "FANOUT_SHARD_SECONDS",
            "fanout_shard_seconds",
            Kind.NUMBER,
            f"`{DEFAULT_SHARD_SECONDS:g}`",
            "Audio per shard, rounded to pyannote's chunk grid and the batch sizes.",
            minimum=1.0,
        ),
        Variable(
            "LONG_AUDIO_ROUTE",
            "long_audio_route",
            Kind.CHOICE,
            "`fanout`",
            "With both the fan-out and the GPU endpoint configured, which one takes long audio (`fanout` or `gpu`).",
            choices=ROUTES,
        ),
        Variable(
            "FANOUT_DEADLINE_SECONDS",
            "fanout_deadline_seconds",
            Kind.NUMBER,
            f"`{DEFAULT_FANOUT_DEADLINE_SECONDS}` (4 h)",
            "A fan-out execution without a report this long after its start is ended by the sweep: a few rounds of "
            "900 s invocations (plan, shards in waves of `FanOutMaxConcurrency`, reduce, publish), each retried at "
            "most 3 times.",
            minimum=60.0,
        ),
        Variable(
            "JOB_DEADLINE_SECONDS",
            "job_deadline_seconds",
            Kind.NUMBER,
            f"`{DEFAULT_JOB_DEADLINE_SECONDS}` (9 h)",
            "A job still running this long after its first start is ended by the sweep. The work queue's worst "
            "case: its 5 receives end within 5 visibility timeouts (6 × the function timeout) of the first, plus "
            "one of margin; the template sets it from `FunctionTimeout`.",
            minimum=60.0,
        ),
        Variable(
            "GPU_DEADLINE_SECONDS",
            "gpu_deadline_seconds",
            Kind.NUMBER,
            f"`{DEFAULT_GPU_DEADLINE_SECONDS}` (7.5 h)",
            "A routed inference without a report this long after its submission is ended by the sweep: SageMaker's "
            "queue limit (`RequestTTLSeconds`, 6 h) + the invocation timeout (1 h) + 30 min.",
            minimum=60.0,
        ),
    ),
)
"""Every variable ``AwsSettings.from_env`` reads, in the order docs/configuration.md lists them."""
