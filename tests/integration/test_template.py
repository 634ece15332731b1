"""The SAM templates deploy: the real transform accepts them, and what it produces comes up in moto's CloudFormation.

1. template.yaml and infra/sagemaker/endpoint.yaml go through aws-sam-translator (tools venv), the code behind
   CloudFormation's `AWS::Serverless-2016-10-31` transform. Its output keeps the Conditions; they are evaluated for
   a few parameter sets (defaults, an alarm e-mail, the GPU endpoint with an event bus, an existing bucket), so the
   assertions look at what one deployment would create: IAM authorization on every route, an alarm topic CloudWatch
   can publish to, TLS-only resource policies, prefix-scoped function permissions, the parent/nested GPU wiring.
2. The transformed templates are deployed into moto's CloudFormation (moto server on 127.0.0.1) and the resources
   it creates are read back through the ordinary APIs: names, ARNs and wiring as CloudFormation resolved them.

What moto 5.2.5 cannot check, so those parts are asserted on the transformed template only:
- Resource types its CloudFormation skips (a warning, no resource): AWS::ApiGatewayV2::Api/Stage (the HTTP API and
  its IAM authorization), AWS::S3::BucketPolicy, AWS::SQS::QueuePolicy, AWS::SNS::TopicPolicy,
  AWS::CloudWatch::Alarm, AWS::Lambda::EventInvokeConfig, AWS::ApplicationAutoScaling::*. A nested
  AWS::CloudFormation::Stack cannot answer `Fn::GetAtt Stack.Outputs.X`, so the GPU template is deployed as a stack
  of its own and the parent's wiring to it (parameters, outputs, subscriptions) is checked on the two templates.
- Properties its CloudFormation drops: the bucket's NotificationConfiguration, versioning, public access block,
  ownership and lifecycle (only encryption is applied: the test puts the template's notification configuration on
  the bucket, as CloudFormation would, and checks S3 -> SQS delivery for the input prefix only); DynamoDB TTL and
  point-in-time recovery; the function's PackageType (reported as Zip), Architectures, EphemeralStorage, Tracing and
  LoggingConfig; the role's managed policy ARNs (no AWS managed policies are loaded).
- The image function is created without Docker (moto does not look the image up: MOTO_LAMBDA_STUB_ECR defaults to
  true) but cannot be invoked: moto runs function code only in Docker, in its own Zip runtimes.
- No policy is evaluated: moto stores IAM statements, key policies and resource policies and enforces none of them,
  and SNS does not actually encrypt with the key. Whether CloudWatch can use the key and publish is asserted on the
  policy documents, not observed.
- Worked around: moto resolves `Ref: AWS::NoValue` inside a list to null (the role's conditional policies crash
  it), so Conditions are resolved before deploying; it turns Number parameters and numeric defaults into ints, so
  `Fn::FindInMap` keyed by FunctionTimeout fails (CloudFormation passes strings): the copy moto gets declares
  FunctionTimeout as String and stringifies defaults.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest

from diarization.service.overdue import DEFAULT_FANOUT_DEADLINE_SECONDS
from infra.template_check import (
    PLACEHOLDER_ARTIFACT_BUCKET,
    PLACEHOLDER_IMAGE_URI,
    ROOT,
    resolve_conditions,
    transformed,
)

TEMPLATE = ROOT / "template.yaml"
GPU_TEMPLATE = ROOT / "infra" / "sagemaker" / "endpoint.yaml"
DEFINITION = "statemachine/fanout.asl.json"
ACCOUNT = "123456789012"
GPU_IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/diarization-gpu:1"
PARAMETER_SETS: dict[str, dict[str, str]] = {
    "defaults": {},
    "alarms": {"AlarmEmail": "ops@example.com"},
    "gpu": {"GpuImageUri": GPU_IMAGE, "EventBusName": "diarization-events", "AlarmEmail": "ops@example.com"},
    "existing-bucket": {"ExistingBucketName": "my-audio"},
    "webhooks": {"WebhookAllowedHosts": "hooks.example.com,*.example.org:8443", "WebhookSecretParameter": "/dz/hook"},
    "no-fanout": {"FanOut": "never"},
}
# moto warns once per resource its CloudFormation skips (MOTO_SKIPS); that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse .* not supported by moto:UserWarning")
ROUTES = {
    "POST /jobs",
    "GET /jobs/{job_id}",
    "POST /diarize",
    "POST /voiceprints",
    "GET /voiceprints/{name}",
    "DELETE /voiceprints/{name}",
}
# Resource types moto's CloudFormation skips; see the module docstring.
MOTO_SKIPS = {
    "AWS::ApiGatewayV2::Api",
    "AWS::ApiGatewayV2::Stage",
    "AWS::S3::BucketPolicy",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::CloudWatch::Alarm",
    "AWS::Lambda::EventInvokeConfig",
    "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy",
}


# --- reading templates ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_templates() -> dict[str, dict[str, Any]]:
    """template.yaml through the real transform, once per parameter set, Conditions resolved."""
    return {name: resolve_conditions(transformed(TEMPLATE, values), values) for name, values in PARAMETER_SETS.items()}


@pytest.fixture(scope="module")
def gpu_template() -> dict[str, Any]:
    return transformed(GPU_TEMPLATE)


def render(node: Any, values: dict[str, str]) -> Any:
    """Intrinsics as text: Ref and Fn::Sub variables from `values` (parameters), others as <Name> / <Name.Attr>."""

    def variable(name: str) -> str:
        return values.get(name, f"<{name}>")

    if isinstance(node, list):
        return [render(item, values) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"}:
        return variable(node["Ref"])
    if set(node) == {"Fn::GetAtt"}:
        return variable(".".join(node["Fn::GetAtt"]))
    if set(node) == {"Fn::Split"}:
        separator, text = node["Fn::Split"]
        return str(render(text, values)).split(separator)
    if set(node) == {"Fn::Select"}:  # a text's part, where the text is known; else left as it is
        index, items = node["Fn::Select"]
        rendered = render(items, values)
        if isinstance(rendered, list) and int(index) < len(rendered):
            return rendered[int(index)]
    if set(node) == {"Fn::Sub"}:
        text, mapping = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]
        local = {**values, **{key: str(render(value, values)) for key, value in mapping.items()}}
        return re.sub(r"\$\{([^}!]+)\}", lambda match: local.get(match[1], f"<{match[1]}>"), text)
    return {key: render(value, values) for key, value in node.items()}


def pseudo(values: dict[str, str]) -> dict[str, str]:
    return {**values, "AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": ACCOUNT}


def defaults_with(template: dict[str, Any], overrides: dict[str, str]) -> dict[str, str]:
    parameters = template.get("Parameters", {})
    return pseudo({name: str(spec["Default"]) for name, spec in parameters.items() if "Default" in spec} | overrides)


def statements(document: dict[str, Any] | str) -> list[dict[str, Any]]:
    if isinstance(document, str):
        # moto returns a CloudFormation-made role's inline policy as Python's repr of the dict, not as JSON.
        document = json.loads(document) if document.startswith('{"') else ast.literal_eval(document)
    assert isinstance(document, dict)
    found = document["Statement"]
    return [found] if isinstance(found, dict) else list(found)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def authorization(requirements: list[dict[str, Any]], schemes: dict[str, Any]) -> str:
    """AWS_IAM when every alternative names a SigV4 scheme only; no requirement, or an empty one, is public."""
    if not requirements or not all(requirements):
        return "NONE"
    kinds = {
        "AWS_IAM" if schemes.get(name, {}).get("x-amazon-apigateway-authtype") == "awsSigv4" else f"scheme:{name}"
        for requirement in requirements
        for name in requirement
    }
    return "AWS_IAM" if kinds == {"AWS_IAM"} else ",".join(sorted(kinds))


def route_authorization(resources: dict[str, Any]) -> dict[str, str]:
    """'METHOD /path' -> the authorization type API Gateway gives the route (AWS_IAM, NONE, or the scheme used).

    SAM writes an HTTP API as an OpenAPI body; on import API Gateway sets AuthorizationType AWS_IAM on a route whose
    security requirements all name an `awsSigv4` scheme. An empty requirement (or none) makes the route public.
    """
    routes: dict[str, str] = {}
    for resource in resources.values():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::ApiGatewayV2::Route":
            routes[properties["RouteKey"]] = properties.get("AuthorizationType", "NONE")
        if resource["Type"] != "AWS::ApiGatewayV2::Api":
            continue
        body = properties.get("Body", {})
        schemes = body.get("components", {}).get("securitySchemes", {})
        for path, operations in body.get("paths", {}).items():
            for method, operation in operations.items():
                if method == "parameters":
                    continue
                verb = "ANY" if method == "x-amazon-apigateway-any-method" else method.upper()
                routes[f"{verb} {path}"] = authorization(operation.get("security", body.get("security", [])), schemes)
    return routes


# --- the transform ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", PARAMETER_SETS)
def test_every_route_requires_iam(app_templates: dict[str, dict[str, Any]], case: str) -> None:
    resources = app_templates[case]["Resources"]
    assert route_authorization(resources) == dict.fromkeys(ROUTES, "AWS_IAM")
    # No other way in: no REST API, no function URL, and API Gateway may invoke the function on these routes only.
    types = {resource["Type"] for resource in resources.values()}
    assert not types & {"AWS::ApiGateway::RestApi", "AWS::Lambda::Url", "AWS::Serverless::Api"}
    invokers = {
        render(resource["Properties"]["SourceArn"], {}).split("/", 2)[-1]
        for resource in resources.values()
        if resource["Type"] == "AWS::Lambda::Permission"
        and resource["Properties"]["Principal"] == "apigateway.amazonaws.com"
    }
    assert invokers == {
        "POST/jobs",
        "GET/jobs/*",
        "POST/diarize",
        "POST/voiceprints",
        "GET/voiceprints/*",
        "DELETE/voiceprints/*",
    }


def test_alarm_topic_is_encrypted_with_a_key_cloudwatch_may_use(app_templates: dict[str, dict[str, Any]]) -> None:
    resources = app_templates["alarms"]["Resources"]
    topic = resources["AlarmTopic"]["Properties"]
    # Not alias/aws/sns: that AWS-managed key's policy cannot be changed to trust cloudwatch.amazonaws.com.
    assert topic["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}
    assert topic["Subscription"] == [{"Protocol": "email", "Endpoint": {"Ref": "AlarmEmail"}}]

    key = resources["AlarmTopicKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    policy = statements(key["KeyPolicy"])
    assert all(statement["Principal"] != "*" for statement in policy)
    admin = [
        s for s in policy if s["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    ]
    assert len(admin) == 1 and admin[0]["Effect"] == "Allow"
    (cloudwatch,) = [s for s in policy if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert cloudwatch["Effect"] == "Allow"
    assert set(as_list(cloudwatch["Action"])) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert cloudwatch["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}

    topic_policy = resources["AlarmTopicPolicy"]["Properties"]
    assert topic_policy["Topics"] == [{"Ref": "AlarmTopic"}]
    document = statements(topic_policy["PolicyDocument"])
    allows = [s for s in document if s["Effect"] == "Allow"]
    assert [s["Principal"] for s in allows] == [{"Service": "cloudwatch.amazonaws.com"}]
    assert allows[0]["Action"] == "sns:Publish"
    assert allows[0]["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert_denies_plain_http(document, "sns:Publish")

    for alarm in ("DeadLetterAlarm", "FunctionErrorAlarm"):
        assert resources[alarm]["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_without_an_alarm_address_there_is_no_topic(app_templates: dict[str, dict[str, Any]]) -> None:
    resources = app_templates["defaults"]["Resources"]
    assert not {"AlarmTopic", "AlarmTopicKey", "AlarmTopicPolicy"} & set(resources)
    for alarm in ("DeadLetterAlarm", "FunctionErrorAlarm"):
        assert "AlarmActions" not in resources[alarm]["Properties"]


def assert_denies_plain_http(document: list[dict[str, Any]], action: str) -> None:
    denials = [
        s for s in document if s["Effect"] == "Deny" and "aws:SecureTransport" in s.get("Condition", {}).get("Bool", {})
    ]
    assert len(denials) == 1, document
    (denial,) = denials
    assert denial["Principal"] == "*" and denial["Action"] == action
    assert denial["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_bucket_and_queue_accept_tls_only(app_templates: dict[str, dict[str, Any]]) -> None:
    resources = app_templates["defaults"]["Resources"]
    bucket_policy = resources["AudioBucketPolicy"]["Properties"]
    assert bucket_policy["Bucket"] == {"Ref": "AudioBucket"}
    document = statements(bucket_policy["PolicyDocument"])
    assert_denies_plain_http(document, "s3:*")
    (denial,) = document
    assert render(denial["Resource"], {}) == ["<AudioBucket.Arn>", "<AudioBucket.Arn>/*"]
    assert_denies_plain_http(statements(resources["WorkQueuePolicy"]["Properties"]["PolicyDocument"]), "sqs:*")
    block = resources["AudioBucket"]["Properties"]["PublicAccessBlockConfiguration"]
    assert block == dict.fromkeys(
        ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True
    )


def test_webhooks_exist_only_when_hosts_are_allowed(app_templates: dict[str, dict[str, Any]]) -> None:
    """Off by default: no queue, no consumer, no secret access, and the function sees an empty allow-list."""
    webhook_resources = {"WebhookQueue", "WebhookDeadLetterQueue", "WebhookQueuePolicy", "WebhookDeliveries"}
    assert not webhook_resources & set(app_templates["defaults"]["Resources"])
    resources = app_templates["webhooks"]["Resources"]
    assert webhook_resources <= set(resources)
    queue = resources["WebhookQueue"]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    visibility = {"Fn::FindInMap": ["Timeouts", {"Ref": "FunctionTimeout"}, "WebhookVisibility"]}
    assert queue["VisibilityTimeout"] == visibility
    for timeout, row in app_templates["webhooks"]["Mappings"]["Timeouts"].items():
        # short (an invocation that dies retries within minutes), but never under the function's timeout: Lambda
        # refuses a mapping whose queue hides a message for less than the function may run
        assert int(timeout) <= row["WebhookVisibility"] <= int(timeout) + 60 < row["QueueVisibility"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]}
    mapping = resources["WebhookDeliveries"]["Properties"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["WebhookQueue", "Arn"]}
    assert mapping["BatchSize"] == 1  # a slow receiver holds its own attempt only, never a batch of others
    assert "MaximumBatchingWindowInSeconds" not in mapping
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}
    variables = resources["DiarizationFunction"]["Properties"]["Environment"]["Variables"]
    # the function's last attempt is the queue's last receive
    assert variables["WEBHOOK_MAX_ATTEMPTS"] == queue["RedrivePolicy"]["maxReceiveCount"]
    assert variables["WEBHOOK_QUEUE_URL"] == {"Ref": "WebhookQueue"}
    assert variables["WEBHOOK_QUEUE_ARN"] == {"Fn::GetAtt": ["WebhookQueue", "Arn"]}
    assert_denies_plain_http(statements(resources["WebhookQueuePolicy"]["Properties"]["PolicyDocument"]), "sqs:*")
    alarm = resources["WebhookDeadLetterAlarm"]["Properties"]
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["WebhookDeadLetterQueue", "QueueName"]}


def test_an_existing_bucket_is_used_not_created(app_templates: dict[str, dict[str, Any]]) -> None:
    resources = app_templates["existing-bucket"]["Resources"]
    assert not {"AudioBucket", "AudioBucketPolicy"} & set(resources)
    variables = resources["DiarizationFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["INPUT_BUCKET"] == {"Ref": "ExistingBucketName"}
    (notifications, _) = statements(resources["WorkQueuePolicy"]["Properties"]["PolicyDocument"])
    source = render(notifications["Condition"]["ArnLike"]["aws:SourceArn"], pseudo(PARAMETER_SETS["existing-bucket"]))
    assert source == "arn:aws:s3:::my-audio"


def lifecycle_rules(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    rules = resources["AudioBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    return {rule["Id"]: rule for rule in rules}


PRIVACY_RULES = ("expire-gpu-outputs", "forget-deleted-voiceprints")
"""Speaker centroids in the GPU's raw outputs and deleted voiceprints' old versions are biometric data: a day."""


def test_biometric_data_is_not_kept(app_templates: dict[str, dict[str, Any]]) -> None:
    rules = lifecycle_rules(app_templates["defaults"]["Resources"])
    gpu, voiceprints = rules["expire-gpu-outputs"], rules["forget-deleted-voiceprints"]
    assert (gpu["Prefix"], gpu["ExpirationInDays"], gpu["NoncurrentVersionExpiration"]) == (
        "async-output/",
        1,
        {"NoncurrentDays": 1},
    )
    assert voiceprints["Prefix"] == "voiceprints/" and voiceprints["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": 1
    }
    assert all(rule["Status"] == "Enabled" for rule in (gpu, voiceprints))


def test_inputs_expire_and_results_are_kept_by_default(app_templates: dict[str, dict[str, Any]]) -> None:
    rules = lifecycle_rules(app_templates["defaults"]["Resources"])
    assert set(rules) == {"tidy", "expire-inputs", *PRIVACY_RULES}
    expiry = rules["expire-inputs"]
    assert expiry["Prefix"] == {"Ref": "InputPrefix"} and expiry["ExpirationInDays"] == {"Ref": "InputExpirationDays"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"InputExpirationDays": "0", "ResultExpirationDays": "90"}, {"tidy", "expire-results", *PRIVACY_RULES}),
        ({"InputPrefix": ""}, {"tidy", *PRIVACY_RULES}),  # a rule for the empty prefix would expire the results too
    ],
)
def test_expiry_follows_the_parameters(overrides: dict[str, str], expected: set[str]) -> None:
    template = resolve_conditions(transformed(TEMPLATE, overrides), overrides)
    assert set(lifecycle_rules(template["Resources"])) == expected


def test_the_queue_leaves_room_in_the_reservation(app_templates: dict[str, dict[str, Any]]) -> None:
    """Queue messages never wait on the API or GPU completions (and are not throttled into the DLQ)."""
    template = app_templates["defaults"]
    resources = template["Resources"]
    mappings = {
        r["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    }
    assert set(mappings) == {"WorkQueue", "DeadLetterQueue"}
    assert mappings["WorkQueue"]["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "QueueMaximumConcurrency"}}
    assert mappings["DeadLetterQueue"]["ScalingConfig"] == {"MaximumConcurrency": 2}
    parameters = template["Parameters"]
    consumers = int(parameters["QueueMaximumConcurrency"]["Default"]) + 2 + 2  # work queue, dead letters, webhooks
    assert consumers < int(parameters["ReservedConcurrency"]["Default"])
    # ... and one fan-out's shards at once fit beside them and the 2 kept for the API and completions
    shards = int(parameters["FanOutMaxConcurrency"]["Default"])
    assert consumers + 2 + shards <= int(parameters["ReservedConcurrency"]["Default"])


def test_given_up_work_reaches_its_consumer(app_templates: dict[str, dict[str, Any]]) -> None:
    """Timeouts and out-of-memory kills never reach the handler: SQS dead-letters the message, Lambda sends a failed
    asynchronous (SNS) invocation to its on-failure destination, and the function consumes both from one queue."""
    resources = app_templates["defaults"]["Resources"]
    queue = resources["DeadLetterQueue"]["Properties"]
    # an event source mapping needs the visibility timeout to cover the function's
    assert queue["VisibilityTimeout"] == resources["WorkQueue"]["Properties"]["VisibilityTimeout"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["ParkedMessagesQueue", "Arn"]},
        "maxReceiveCount": 3,
    }
    (mapping,) = (
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
        and r["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    )
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    (invoke_config,) = (r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::EventInvokeConfig")
    assert invoke_config["DestinationConfig"] == {
        "OnFailure": {"Destination": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}}
    }
    variables = resources["DiarizationFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["DEAD_LETTER_QUEUE_ARN"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert variables["ORDERING_TABLE"] == {"Ref": "OrderingTable"}
    alarms = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    watched = {
        alarm["Dimensions"][0]["Value"]["Fn::GetAtt"][0]: alarm["MetricName"]
        for alarm in alarms.values()
        if alarm["Namespace"] == "AWS/SQS"
    }
    # a redrive does not count as "sent", and the consumer empties the queue at once: its receives are what counts
    assert watched == {
        "DeadLetterQueue": "NumberOfMessagesReceived",
        "ParkedMessagesQueue": "ApproximateNumberOfMessagesVisible",
    }


@pytest.mark.parametrize("case", PARAMETER_SETS)
def test_function_permissions_are_scoped(app_templates: dict[str, dict[str, Any]], case: str) -> None:
    template = app_templates[case]
    values = defaults_with(template, PARAMETER_SETS[case])
    role = template["Resources"]["DiarizationFunctionRole"]["Properties"]
    # SAM's own additions for the SQS event, logs and X-Ray; anything broader (e.g. AmazonS3FullAccess) fails here.
    assert sorted(role["ManagedPolicyArns"]) == [
        "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole",
    ]
    inline = [render(s, values) for policy in role["Policies"] for s in statements(policy["PolicyDocument"])]
    # SAM's statement for the on-failure destination has no Sid: exactly one, for exactly that queue
    (on_failure,) = [s for s in inline if "Sid" not in s]
    assert on_failure == {"Action": "sqs:SendMessage", "Effect": "Allow", "Resource": "<DeadLetterQueue.Arn>"}
    inline = [s for s in inline if "Sid" in s]
    expected = {
        "ReadInputs",
        "ListInputsSoMissingObjectsAre404",
        "WriteResults",
        "CallersVoiceprints",
        "PresignUploads",
        "StateTables",
        "IdempotencyRecords",
        "QueueJobs",
        "FindOverdueJobs",
    }
    if case == "gpu":
        expected |= {"PublishCompletionEvents", "RouteToGpu", "ReadGpuOutputs"}
    if case == "webhooks":
        expected |= {"QueueAndRetryWebhooks", "ReadWebhookSecret"}
    if case != "no-fanout":
        expected |= FANOUT_SIDS
    assert {s["Sid"] for s in inline} == expected
    assert_fanout_scoped([s for s in inline if s["Sid"] in FANOUT_SIDS])
    inline = [s for s in inline if s["Sid"] not in FANOUT_SIDS]
    if case == "webhooks":
        (secret,) = [s for s in inline if s["Sid"] == "ReadWebhookSecret"]
        assert secret["Action"] == "ssm:GetParameter"  # that one parameter, nothing else in SSM
        assert secret["Resource"] == "arn:aws:ssm:us-east-1:123456789012:parameter/dz/hook"
        inline = [s for s in inline if s["Sid"] != "ReadWebhookSecret"]
    bucket = "my-audio" if "ExistingBucketName" in PARAMETER_SETS[case] else "<AudioBucket>"
    tables = {"<IdempotencyTable.Arn>", "<JobsTable.Arn>", "<OrderingTable.Arn>"}
    assert_scoped(inline, bucket, "<WorkQueue.Arn>", tables, "<JobsTable.Arn>", "<IdempotencyTable.Arn>")
    covered = {
        resource
        for s in inline
        if s["Sid"] in {"StateTables", "IdempotencyRecords"}
        for resource in as_list(s["Resource"])
    }
    assert covered == tables
    if case == "gpu":
        (invoke,) = [s for s in inline if s["Sid"] == "RouteToGpu"]
        assert (
            invoke["Resource"] == "arn:aws:sagemaker:us-east-1:123456789012:endpoint/<GpuEndpoint.Outputs.EndpointName>"
        )
        (events,) = [s for s in inline if s["Sid"] == "PublishCompletionEvents"]
        assert events["Resource"] == "arn:aws:events:us-east-1:123456789012:event-bus/diarization-events"


FANOUT_SIDS = {"StartFanOut", "FanOutWorkObjects", "ListWorkSoMissingObjectsAre404"}
STATE_MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:diarization-fanout-"


def assert_fanout_scoped(statements: list[dict[str, Any]]) -> None:
    """The fan-out's: start that one state machine; objects and listing in the work bucket only."""
    for statement in statements:
        assert statement["Effect"] == "Allow"
        if statement["Sid"] == "StartFanOut":
            assert statement["Action"] == "states:StartExecution"
            assert statement["Resource"].startswith(STATE_MACHINE_ARN)
        elif statement["Sid"] == "FanOutWorkObjects":
            assert statement["Action"] == ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"]
            assert statement["Resource"] == "<FanoutWorkBucket.Arn>/*"
        else:
            assert (statement["Action"], statement["Resource"]) == ("s3:ListBucket", "<FanoutWorkBucket.Arn>")


def _tasks(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        if state["Type"] == "Task":
            yield name, state
        if "ItemProcessor" in state:
            yield from _tasks(state["ItemProcessor"]["States"])


def test_every_fanout_step_queues_for_concurrency_until_the_deadline_sweep() -> None:
    """A throttled step (the function's reserved concurrency in use, by another fan-out say) waits with backoff rather
    than failing the file: on average for over an hour, at most (no jitter) within FANOUT_DEADLINE_SECONDS, so the
    sweep's JOB_DEADLINE_EXCEEDED, not an early FANOUT_FAILED, is the bound. Crashes and service errors are retried
    under their own names (Lambda.Unknown is how Step Functions reports a function that timed out or ran out of
    memory)."""
    definition = json.loads((ROOT / DEFINITION).read_text())
    tasks = dict(_tasks(definition["States"]))
    assert set(tasks) == {"Plan", "Shard", "Reduce", "Publish", "Fail"}
    for name, task in tasks.items():
        retries = {error: rule for rule in task["Retry"] for error in rule["ErrorEquals"]}
        assert {"Lambda.ServiceException", "Lambda.Unknown", "TransientStepError"} <= set(retries), name
        throttled = retries["Lambda.TooManyRequestsException"]
        waits = [
            min(throttled["IntervalSeconds"] * throttled["BackoffRate"] ** attempt, throttled["MaxDelaySeconds"])
            for attempt in range(throttled["MaxAttempts"])
        ]
        assert throttled["JitterStrategy"] == "FULL", name  # queued fan-outs do not all retry at the same instant
        assert sum(waits) / 2 > 3600, name  # full jitter: half the unjittered wait on average
        assert sum(waits) < DEFAULT_FANOUT_DEADLINE_SECONDS, name


def test_the_fanout_state_machine(app_templates: dict[str, dict[str, Any]]) -> None:
    """The definition file and its substitutions, the machine's role (invoke the function, nothing else), the work
    bucket (encrypted with KMS, private, TLS only, emptied after a day), the function's settings; FanOut=never removes
    all of it."""
    resources = app_templates["defaults"]["Resources"]
    machine = resources["FanoutStateMachine"]["Properties"]
    assert machine["DefinitionS3Location"] == {"Bucket": PLACEHOLDER_ARTIFACT_BUCKET, "Key": DEFINITION}
    definition = (ROOT / DEFINITION).read_text()
    assert set(re.findall(r"\$\{(\w+)\}", definition)) == set(machine["DefinitionSubstitutions"])
    assert render(machine["DefinitionSubstitutions"], {}) == {
        "FunctionArn": "<DiarizationFunction.Arn>",
        "MapMaxConcurrency": "<FanOutMaxConcurrency>",
    }
    role = resources[machine["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
    invoke = [s for policy in role["Policies"] for s in statements(policy["PolicyDocument"])]
    assert [(s["Action"], render(s["Resource"], {})) for s in invoke if s.get("Sid") == "InvokeTheFunctionOnly"] == [
        ("lambda:InvokeFunction", ["<DiarizationFunction.Arn>", "<DiarizationFunction.Arn>:*"])
    ]
    assert all(s.get("Sid") == "InvokeTheFunctionOnly" or "xray" in str(s["Action"]) for s in invoke)
    name = render(machine["StateMachineName"], {})
    variables = resources["DiarizationFunction"]["Properties"]["Environment"]["Variables"]
    assert render(variables["FANOUT_STATE_MACHINE_ARN"], pseudo({})) == STATE_MACHINE_ARN + name.removeprefix(
        "diarization-fanout-"
    )
    assert render(variables["FANOUT_WORK_BUCKET"], {}) == "<FanoutWorkBucket>"
    bucket = resources["FanoutWorkBucket"]["Properties"]
    (encryption,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    (rule,) = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == 1 and "Prefix" not in rule
    (tls,) = statements(resources["FanoutWorkBucketPolicy"]["Properties"]["PolicyDocument"])
    assert tls["Effect"] == "Deny" and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    off = app_templates["no-fanout"]
    assert not {"FanoutStateMachine", "FanoutWorkBucket", "FanoutWorkBucketPolicy"} & set(off["Resources"])
    variables = off["Resources"]["DiarizationFunction"]["Properties"]["Environment"]["Variables"]
    assert (variables["FANOUT_STATE_MACHINE_ARN"], variables["FANOUT_WORK_BUCKET"]) == ("", "")


def assert_scoped(
    inline: list[dict[str, Any]], bucket: str, queue: str, tables: set[str], jobs_table: str, idempotency_table: str
) -> None:
    """Objects only under the input, output, async-output and voiceprint prefixes; listing only those prefixes;
    queries only on the jobs table's deadline index; items deleted only from the idempotency table; nothing '*'."""
    prefixes = ("audio/", "results/", "async-output/", "voiceprints/")
    for statement in inline:
        assert statement["Effect"] == "Allow"
        actions, resources = as_list(statement["Action"]), as_list(statement["Resource"])
        assert all("*" not in action for action in actions), statement
        assert "*" not in resources, statement
        if actions == ["s3:ListBucket"]:
            assert resources == [f"arn:aws:s3:::{bucket}"]
            listed = statement["Condition"]["StringLike"]["s3:prefix"]
            assert listed and all(prefix.startswith(prefixes) for prefix in listed), statement
        elif any(action.startswith("s3:") for action in actions):
            for resource in resources:
                key = resource.removeprefix(f"arn:aws:s3:::{bucket}/")
                assert key != resource and key.startswith(prefixes) and key.endswith("*"), statement
        elif actions == ["dynamodb:Query"]:  # the overdue-job sweep reads the jobs table's deadline index only
            assert resources == [f"{jobs_table}/index/running-by-deadline"], statement
        elif any(action.startswith("dynamodb:") for action in actions):
            assert set(resources) <= tables, statement
            if "dynamodb:DeleteItem" in actions:  # Powertools deletes a failed run's record; jobs and ordering: TTL
                assert resources == [idempotency_table], statement
        elif actions == ["sqs:SendMessage", "sqs:ChangeMessageVisibility"]:  # webhook deliveries: queue and retry
            assert resources == ["<WebhookQueue.Arn>"], statement
        elif any(action.startswith("sqs:") for action in actions):
            assert resources == [queue]


def test_gpu_application_matches_the_nested_template(
    app_templates: dict[str, dict[str, Any]], gpu_template: dict[str, Any]
) -> None:
    resources = app_templates["gpu"]["Resources"]
    nested = resources["GpuEndpoint"]
    assert nested["Type"] == "AWS::CloudFormation::Stack"
    assert nested["Properties"]["TemplateURL"] == "infra/sagemaker/endpoint.yaml"  # `sam deploy` uploads it
    passed = set(nested["Properties"]["Parameters"])
    declared = gpu_template["Parameters"]
    assert passed <= set(declared)
    assert {name for name, spec in declared.items() if "Default" not in spec} <= passed
    # Every `GpuEndpoint.Outputs.X` the parent uses is an output of the nested template.
    used = set(re.findall(r"GpuEndpoint\.Outputs\.(\w+)", json.dumps(render(resources, {}))))
    assert used == {"EndpointName", "SuccessTopicArn", "ErrorTopicArn"}
    assert used <= set(gpu_template["Outputs"])
    for kind in ("Success", "Error"):
        subscription = render(resources[f"Gpu{kind}Subscription"]["Properties"], {})
        assert subscription == {
            "Protocol": "lambda",
            "TopicArn": f"<GpuEndpoint.Outputs.{kind}TopicArn>",
            "Endpoint": "<DiarizationFunction.Arn>",
        }
        permission = render(resources[f"Gpu{kind}Permission"]["Properties"], {})
        assert permission["Principal"] == "sns.amazonaws.com"
        assert permission["SourceArn"] == f"<GpuEndpoint.Outputs.{kind}TopicArn>"
    assert "GpuEndpoint" not in app_templates["defaults"]["Resources"]


def test_only_the_endpoint_publishes_its_notifications(gpu_template: dict[str, Any]) -> None:
    resources = gpu_template["Resources"]
    policy = resources["TopicPolicy"]["Properties"]
    topics = [{"Ref": "SuccessTopic"}, {"Ref": "ErrorTopic"}]
    assert policy["Topics"] == topics
    document = statements(policy["PolicyDocument"])
    assert all(s["Resource"] == topics and s["Action"] == "sns:Publish" for s in document)
    allowed = {
        json.dumps(s["Principal"], sort_keys=True): s.get("Condition") for s in document if s["Effect"] == "Allow"
    }
    assert allowed == {
        json.dumps({"AWS": {"Fn::GetAtt": ["ExecutionRole", "Arn"]}}): None,
        json.dumps({"Service": "sagemaker.amazonaws.com"}): {
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
            "ArnEquals": {"aws:SourceArn": {"Ref": "Endpoint"}},  # this endpoint, not any of the account's
        },
    }
    (others,) = [s for s in document if s["Sid"] == "NobodyElsePublishes"]
    assert others["Effect"] == "Deny" and others["Principal"] == "*"
    assert others["Condition"] == {
        "ArnNotEqualsIfExists": {"aws:PrincipalArn": {"Fn::GetAtt": ["ExecutionRole", "Arn"]}},
        "StringNotEqualsIfExists": {"aws:PrincipalServiceName": "sagemaker.amazonaws.com"},
    }
    assert_denies_plain_http(document, "sns:Publish")
    notify = resources["EndpointConfig"]["Properties"]["AsyncInferenceConfig"]["OutputConfig"]["NotificationConfig"]
    assert notify == {"SuccessTopic": topics[0], "ErrorTopic": topics[1]}


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        (GPU_IMAGE, "diarization-gpu"),
        (f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/team/diarization@sha256:{'ab' * 32}", "team/diarization"),
    ],
)
def test_the_endpoint_pulls_only_its_own_image(gpu_template: dict[str, Any], image: str, repository: str) -> None:
    role = gpu_template["Resources"]["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    (pull,) = [s for s in statements(role) if s.get("Sid") == "PullImage"]
    assert render(pull["Resource"], pseudo({"ImageUri": image})) == (
        f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{repository}"
    )


def test_samconfig_deploys_and_validates_this_template(app_templates: dict[str, dict[str, Any]]) -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())["default"]
    # `lint = true` would make a plain `sam validate` run cfn-lint instead of the transform.
    assert "lint" not in config.get("validate", {}).get("parameters", {})
    deploy = config["deploy"]["parameters"]
    # CAPABILITY_AUTO_EXPAND: the GPU variant is a nested application (AWS::Serverless::Application).
    assert set(deploy["capabilities"].split()) == {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"}
    declared = app_templates["defaults"]["Parameters"]
    for name, value in re.findall(r'(\w+)="([^"]*)"', deploy["parameter_overrides"]):
        spec = declared[name]
        if "AllowedValues" in spec:
            assert value in [str(allowed) for allowed in spec["AllowedValues"]], name
        if "MinValue" in spec or "MaxValue" in spec:
            assert spec.get("MinValue", float("-inf")) <= float(value) <= spec.get("MaxValue", float("inf")), name


# --- deployed into moto -----------------------------------------------------------------------------------------


def moto_copy(template: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """What moto can deploy: Conditions resolved, string defaults, FunctionTimeout a String (module docstring)."""
    copy = resolve_conditions(template, values)
    for name, spec in copy.get("Parameters", {}).items():
        if "Default" in spec:
            spec["Default"] = str(spec["Default"])
        if name == "FunctionTimeout":
            spec["Type"] = "String"
    return copy


def deploy(template: dict[str, Any], values: dict[str, str], name: str) -> dict[str, Any]:
    """Create the stack in moto; return its description, logical id -> physical id, and the template moto got."""
    cloudformation = boto3.client("cloudformation")
    body = moto_copy(template, values)
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=json.dumps(body),
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in values.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    (stack,) = cloudformation.describe_stacks(StackName=name)["Stacks"]
    summaries = cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]
    physical = {
        item["LogicalResourceId"]: item["PhysicalResourceId"] for item in summaries if item["LogicalResourceId"]
    }
    return {"stack": stack, "physical": physical, "template": body}


def assert_created_unless_skipped(deployed: dict[str, Any]) -> None:
    """Every resource exists in moto, except exactly those of the types its CloudFormation skips."""
    for name, resource in deployed["template"]["Resources"].items():
        assert (name in deployed["physical"]) == (resource["Type"] not in MOTO_SKIPS), (name, resource["Type"])


@pytest.fixture(scope="module")
def stacks(moto_endpoint: str, app_templates: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    suffix = uuid.uuid4().hex[:8]
    return {
        case: deploy(app_templates[case], PARAMETER_SETS[case], f"diarization-{case}-{suffix}")
        for case in ("defaults", "alarms", "webhooks")
    }


@pytest.mark.parametrize("case", ["defaults", "alarms", "webhooks"])
def test_stack_comes_up_in_moto(stacks: dict[str, dict[str, Any]], case: str) -> None:
    deployed = stacks[case]
    assert deployed["stack"]["StackStatus"] == "CREATE_COMPLETE"
    assert_created_unless_skipped(deployed)
    outputs = {item["OutputKey"]: item["OutputValue"] for item in deployed["stack"]["Outputs"]}
    assert outputs["BucketName"] == deployed["physical"]["AudioBucket"]
    assert outputs["DeadLetterQueueUrl"] == deployed["physical"]["DeadLetterQueue"]
    assert outputs["FunctionName"] == deployed["physical"]["DiarizationFunction"]


def test_deployed_function_is_wired_to_its_resources(stacks: dict[str, dict[str, Any]]) -> None:
    physical = stacks["defaults"]["physical"]
    sqs = boto3.client("sqs")
    queue = sqs.get_queue_attributes(QueueUrl=physical["WorkQueue"], AttributeNames=["All"])["Attributes"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=physical["DeadLetterQueue"], AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    assert json.loads(queue["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}
    assert queue["VisibilityTimeout"] == "5400"  # six times the function timeout (900 s)

    lambda_ = boto3.client("lambda")
    function = lambda_.get_function(FunctionName=physical["DiarizationFunction"])
    assert function["Code"]["ImageUri"] == PLACEHOLDER_IMAGE_URI
    configuration = function["Configuration"]
    assert configuration["Role"].endswith(f":role/{physical['DiarizationFunctionRole']}")
    assert (configuration["Timeout"], configuration["MemorySize"]) == (900, 10240)
    assert function["Concurrency"]["ReservedConcurrentExecutions"] == 20
    variables = configuration["Environment"]["Variables"]
    assert {
        name: variables[name] for name in ("INPUT_BUCKET", "IDEMPOTENCY_TABLE", "JOBS_TABLE", "WORK_QUEUE_URL")
    } == {
        "INPUT_BUCKET": physical["AudioBucket"],
        "IDEMPOTENCY_TABLE": physical["IdempotencyTable"],
        "JOBS_TABLE": physical["JobsTable"],
        "WORK_QUEUE_URL": physical["WorkQueue"],
    }
    assert (variables["EVENT_BUS_NAME"], variables["SAGEMAKER_ENDPOINT_NAME"]) == ("", "")
    assert variables["JOB_DEADLINE_SECONDS"] == "32400"  # 6 x the queue's 5,400 s visibility timeout

    listed = lambda_.list_event_source_mappings(FunctionName=physical["DiarizationFunction"])["EventSourceMappings"]
    mappings = {mapping["EventSourceArn"]: mapping for mapping in listed}
    assert set(mappings) == {queue["QueueArn"], dlq_arn}
    assert {mapping["FunctionArn"] for mapping in listed} == {configuration["FunctionArn"]}
    work, dead_letters = mappings[queue["QueueArn"]], mappings[dlq_arn]
    assert (work["BatchSize"], work["FunctionResponseTypes"]) == (1, ["ReportBatchItemFailures"])
    assert (dead_letters["BatchSize"], dead_letters["FunctionResponseTypes"]) == (10, ["ReportBatchItemFailures"])
    assert variables["DEAD_LETTER_QUEUE_ARN"] == dlq_arn and variables["ORDERING_TABLE"] == physical["OrderingTable"]

    dynamodb = boto3.client("dynamodb")
    for table, key in (("IdempotencyTable", "id"), ("JobsTable", "job_id"), ("OrderingTable", "object")):
        description = dynamodb.describe_table(TableName=physical[table])["Table"]
        assert description["KeySchema"] == [{"AttributeName": key, "KeyType": "HASH"}]
        assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    (index,) = dynamodb.describe_table(TableName=physical["JobsTable"])["Table"]["GlobalSecondaryIndexes"]
    assert (index["IndexName"], index["Projection"]) == ("running-by-deadline", {"ProjectionType": "KEYS_ONLY"})
    assert index["KeySchema"] == [
        {"AttributeName": "running", "KeyType": "HASH"},
        {"AttributeName": "deadline", "KeyType": "RANGE"},
    ]
    events = boto3.client("events")
    (rule,) = events.list_rule_names_by_target(TargetArn=configuration["FunctionArn"])["RuleNames"]
    assert events.describe_rule(Name=rule)["ScheduleExpression"] == "rate(15 minutes)"  # the overdue-job sweep
    # moto's CloudFormation drops TimeToLiveSpecification: the attribute names are checked on the template.
    resources = stacks["defaults"]["template"]["Resources"]
    assert resources["IdempotencyTable"]["Properties"]["TimeToLiveSpecification"] == {
        "AttributeName": "expiration",
        "Enabled": True,
    }
    assert resources["JobsTable"]["Properties"]["TimeToLiveSpecification"] == {
        "AttributeName": "expires_at",
        "Enabled": True,
    }

    iam = boto3.client("iam")
    role = iam.get_role(RoleName=physical["DiarizationFunctionRole"])["Role"]
    assert statements(role["AssumeRolePolicyDocument"]) == [
        {"Action": ["sts:AssumeRole"], "Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}}
    ]
    names = iam.list_role_policies(RoleName=physical["DiarizationFunctionRole"])["PolicyNames"]
    inline = [
        s
        for name in names
        for s in statements(
            iam.get_role_policy(RoleName=physical["DiarizationFunctionRole"], PolicyName=name)["PolicyDocument"]
        )
    ]
    (on_failure,) = [s for s in inline if "Sid" not in s]  # SAM's, for the on-failure destination
    assert (on_failure["Action"], on_failure["Resource"]) == ("sqs:SendMessage", dlq_arn)
    inline = [s for s in inline if "Sid" in s]
    assert {s["Sid"] for s in inline} == {
        "ReadInputs",
        "ListInputsSoMissingObjectsAre404",
        "WriteResults",
        "CallersVoiceprints",
        "PresignUploads",
        "StateTables",
        "IdempotencyRecords",
        "QueueJobs",
        "FindOverdueJobs",
        *FANOUT_SIDS,
    }
    # The function names the state machine it starts without a reference to it (that would be a cycle): the name
    # it computes is the one CloudFormation gave the machine.
    machine = boto3.client("stepfunctions").describe_state_machine(stateMachineArn=physical["FanoutStateMachine"])
    assert variables["FANOUT_STATE_MACHINE_ARN"] == machine["stateMachineArn"]
    assert variables["FANOUT_WORK_BUCKET"] == physical["FanoutWorkBucket"]
    (start,) = [s for s in inline if s["Sid"] == "StartFanOut"]
    assert start["Resource"] == machine["stateMachineArn"]
    inline = [s for s in inline if s["Sid"] not in FANOUT_SIDS]
    arns = {
        t: dynamodb.describe_table(TableName=physical[t])["Table"]["TableArn"]
        for t in ("IdempotencyTable", "JobsTable", "OrderingTable")
    }
    assert_scoped(
        inline,
        physical["AudioBucket"],
        queue["QueueArn"],
        set(arns.values()),
        arns["JobsTable"],
        arns["IdempotencyTable"],
    )

    logs = boto3.client("logs")
    stack_name = stacks["defaults"]["stack"]["StackName"]
    groups = logs.describe_log_groups(logGroupNamePrefix=f"/{stack_name}/")["logGroups"]
    assert {(group["logGroupName"], int(group["retentionInDays"])) for group in groups} == {
        (f"/{stack_name}/diarization", 30),
        (f"/{stack_name}/api", 30),
    }


def test_uploads_under_the_input_prefix_reach_the_work_queue(stacks: dict[str, dict[str, Any]]) -> None:
    """moto's CloudFormation ignores NotificationConfiguration: put the template's on the bucket as CloudFormation
    would (its shape differs from the API's), then S3 must notify the stack's queue for inputs, and only for them."""
    physical = stacks["defaults"]["physical"]
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    queue_arn = sqs.get_queue_attributes(QueueUrl=physical["WorkQueue"], AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    bucket = physical["AudioBucket"]
    # moto's SQS hands each new message to an enabled event source mapping at once and tries to run the function
    # in Docker; the mapping itself is checked above. Paused here, the notification stays in the queue to be read.
    lambda_ = boto3.client("lambda")
    for mapping in lambda_.list_event_source_mappings(FunctionName=physical["DiarizationFunction"])[
        "EventSourceMappings"
    ]:
        lambda_.update_event_source_mapping(UUID=mapping["UUID"], Enabled=False)
    (configuration,) = stacks["defaults"]["template"]["Resources"]["AudioBucket"]["Properties"][
        "NotificationConfiguration"
    ]["QueueConfigurations"]
    values = defaults_with(stacks["defaults"]["template"], {}) | {"WorkQueue.Arn": queue_arn}
    configuration = render(configuration, values)
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": configuration["Queue"],
                    "Events": [configuration["Event"]],
                    "Filter": {"Key": {"FilterRules": configuration["Filter"]["S3Key"]["Rules"]}},
                }
            ]
        },
    )
    s3.put_object(Bucket=bucket, Key="results/not-an-input.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="audio/meeting one.wav", Body=b"RIFF")
    keys: list[str] = []
    for _ in range(10):
        for message in sqs.receive_message(
            QueueUrl=physical["WorkQueue"], WaitTimeSeconds=1, MaxNumberOfMessages=10
        ).get("Messages", []):
            keys += [record["s3"]["object"]["key"] for record in json.loads(message["Body"]).get("Records", [])]
        if keys:
            break
    assert [unquote_plus(key) for key in keys] == ["audio/meeting one.wav"]  # keys arrive URL-encoded


def test_deployed_alarm_topic_uses_the_rotating_key(stacks: dict[str, dict[str, Any]]) -> None:
    physical = stacks["alarms"]["physical"]
    sns, kms = boto3.client("sns"), boto3.client("kms")
    key_id = physical["AlarmTopicKey"]
    attributes = sns.get_topic_attributes(TopicArn=physical["AlarmTopic"])["Attributes"]
    assert attributes["KmsMasterKeyId"] == key_id
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True
    policy = statements(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    (cloudwatch,) = [s for s in policy if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert cloudwatch["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    (subscription,) = sns.list_subscriptions_by_topic(TopicArn=physical["AlarmTopic"])["Subscriptions"]
    assert (subscription["Protocol"], subscription["Endpoint"]) == ("email", "ops@example.com")
    assert "AlarmTopic" not in stacks["defaults"]["physical"]


def test_gpu_stack_comes_up_in_moto(moto_endpoint: str, gpu_template: dict[str, Any]) -> None:
    """The nested template on its own (moto cannot resolve a nested stack's outputs); moto rejects ml.g6 types."""
    values = {"ImageUri": GPU_IMAGE, "DataBucket": "audio-bucket", "InstanceType": "ml.g4dn.xlarge"}
    deployed = deploy(gpu_template, values, f"diarization-gpu-{uuid.uuid4().hex[:8]}")
    assert deployed["stack"]["StackStatus"] == "CREATE_COMPLETE"
    physical = deployed["physical"]
    assert_created_unless_skipped(deployed)
    outputs = {item["OutputKey"]: item["OutputValue"] for item in deployed["stack"]["Outputs"]}
    assert outputs["SuccessTopicArn"] == physical["SuccessTopic"]
    assert outputs["ErrorTopicArn"] == physical["ErrorTopic"]

    sagemaker = boto3.client("sagemaker")
    endpoint = sagemaker.describe_endpoint(EndpointName=outputs["EndpointName"])
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    output = config["AsyncInferenceConfig"]["OutputConfig"]
    assert output["NotificationConfig"] == {
        "SuccessTopic": physical["SuccessTopic"],
        "ErrorTopic": physical["ErrorTopic"],
    }
    assert output["S3OutputPath"] == "s3://audio-bucket/async-output/"
    (variant,) = config["ProductionVariants"]
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["Image"] == GPU_IMAGE
    assert model["ExecutionRoleArn"].endswith(f":role/{physical['ExecutionRole']}")
    iam = boto3.client("iam")
    (name,) = iam.list_role_policies(RoleName=physical["ExecutionRole"])["PolicyNames"]
    document = statements(iam.get_role_policy(RoleName=physical["ExecutionRole"], PolicyName=name)["PolicyDocument"])
    (notify,) = [s for s in document if s["Sid"] == "Notify"]
    assert sorted(notify["Resource"]) == sorted([physical["SuccessTopic"], physical["ErrorTopic"]])
    (read,) = [s for s in document if s["Sid"] == "ReadInputs"]
    assert read["Resource"] == "arn:aws:s3:::audio-bucket/audio/*"
    (pull,) = [s for s in document if s["Sid"] == "PullImage"]
    assert pull["Resource"] == f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/diarization-gpu"  # ImageUri's only
