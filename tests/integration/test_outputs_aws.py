"""Output formats on S3 through the Lambda function, against moto server: the deployment's OUTPUT_FORMATS for S3
events, a job's own `formats` through the API (kept to the download links), and bad format names."""

from __future__ import annotations

import io
import json
import re
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import boto3
import pytest
import srt
import webvtt
import yaml
from PIL import Image
from test_api import call, post_upload, process_queue
from test_lambda import make_app, upload

from diarization.aws.app import FunctionApp
from diarization.aws.settings import AwsSettings
from diarization.errors import ConfigurationError
from diarization.outputs.formats import DEFAULT_OUTPUT_FORMATS, OUTPUT_FORMATS
from infra.local_aws import Deployment, LambdaContext, create_deployment

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def deployment(moto_endpoint: str) -> Deployment:
    return create_deployment()


@pytest.fixture()
def app(deployment: Deployment, tiny_model_dir: Path, tmp_path: Path) -> FunctionApp:
    return make_app(deployment, tiny_model_dir, tmp_path)


def test_an_api_job_writes_its_formats_and_links_them(
    app: FunctionApp, deployment: Deployment, encoded_samples
) -> None:
    status, job = call(app, "POST", "/jobs", {"upload": True, "filename": "call.m4a", "formats": ["vtt", "srt", "png"]})
    assert status == 202
    base = f"s3://{deployment.bucket}/results/uploads/{job['job_id']}/call.m4a"
    assert job["result"] == {
        "json": f"{base}.json",
        "srt": f"{base}.srt",
        "vtt": f"{base}.vtt",
        "png": f"{base}.png",
        "error": f"{base}.error.json",
    }
    assert post_upload(job, encoded_samples["m4a"].read_bytes()) == 204
    process_queue(app, deployment, 1)

    status, done = call(app, "GET", job["status_url"])
    assert status == 200 and done["status"] == "succeeded"
    assert sorted(done["download"]) == ["expires_in", "json", "png", "srt", "vtt"]
    with urllib.request.urlopen(done["download"]["json"]) as response:
        result = json.loads(response.read())
    with urllib.request.urlopen(done["download"]["srt"]) as response:
        cues = list(srt.parse(response.read().decode()))
    assert len(cues) == len(result["exclusive_segments"]) > 0
    with urllib.request.urlopen(done["download"]["vtt"]) as response:
        assert len(webvtt.from_string(response.read().decode())) == len(cues)
    with urllib.request.urlopen(done["download"]["png"]) as response:
        assert Image.open(io.BytesIO(response.read())).format == "PNG"
    key = f"results/uploads/{job['job_id']}/call.m4a"
    head = deployment.s3.head_object(Bucket=deployment.bucket, Key=f"{key}.png")
    assert head["ContentType"] == "image/png"
    assert deployment.object_keys("results/") == [f"{key}.{name}" for name in ("json", "png", "srt", "vtt")]


@pytest.mark.parametrize(
    ("formats", "unknown"), [(["srt", "docx"], ["docx"]), ("mp4", ["mp4"]), ([3], None), ({"srt": 1}, None)]
)
def test_a_bad_format_is_refused_before_any_job(
    app: FunctionApp,
    deployment: Deployment,
    formats: object,
    unknown: list[str] | None,
) -> None:
    status, body = call(app, "POST", "/jobs", {"upload": True, "filename": "x.wav", "formats": formats})
    assert status == 400 and body["error"]["code"] == "UNKNOWN_FORMAT"
    assert body["error"]["details"].get("unknown") == unknown
    assert "svg" in body["error"]["details"]["allowed"]
    assert boto3.client("dynamodb").scan(TableName=deployment.jobs_table)["Count"] == 0


def test_s3_events_get_the_deployments_formats(
    deployment: Deployment,
    tiny_model_dir: Path,
    tmp_path: Path,
    encoded_samples,
) -> None:
    app = make_app(deployment, tiny_model_dir, tmp_path, OUTPUT_FORMATS="svg, csv,pyannoteai")
    upload(deployment, "audio/team/sync.flac", encoded_samples["flac"].read_bytes())
    assert app.lambda_handler(deployment.sqs_event(deployment.notifications(1)), LambdaContext()) == {
        "batchItemFailures": []
    }
    assert deployment.object_keys("results/") == [
        "results/team/sync.flac.csv",
        "results/team/sync.flac.json",
        "results/team/sync.flac.pyannoteai.json",
        "results/team/sync.flac.svg",
    ]
    svg = deployment.s3.get_object(Bucket=deployment.bucket, Key="results/team/sync.flac.svg")
    assert svg["ContentType"] == "image/svg+xml; charset=utf-8"
    root = ET.fromstring(svg["Body"].read())  # noqa: S314  (our own output)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    (event,) = deployment.captured_events()
    assert set(event["detail"]["output"]) == {"json", "csv", "pyannoteai", "svg"}


@pytest.mark.parametrize(("value", "expected"), [(None, ("rttm",)), ("json", ()), ("png,rttm", ("rttm", "png"))])
def test_output_formats_setting(value: str | None, expected: tuple[str, ...]) -> None:
    env = {} if value is None else {"OUTPUT_FORMATS": value}
    assert AwsSettings.from_env(env).output_formats == expected


def test_an_unknown_output_format_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="OUTPUT_FORMATS: unknown format") as raised:
        AwsSettings.from_env({"OUTPUT_FORMATS": "rttm,docx"})
    assert raised.value.details["problems"][0].startswith("OUTPUT_FORMATS")


class CloudFormationLoader(yaml.SafeLoader):
    """Reads `!Ref X` as {"Ref": "X"}: enough to look at parameters and environment variables."""


CloudFormationLoader.add_multi_constructor(
    "!", lambda loader, tag, node: {tag: loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None}
)


def test_the_template_parameter_accepts_what_the_function_does() -> None:
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=CloudFormationLoader)  # noqa: S506
    parameter = template["Parameters"]["OutputFormats"]
    assert parameter["Default"] == ",".join(DEFAULT_OUTPUT_FORMATS)
    pattern = re.compile(parameter["AllowedPattern"])
    for value in [*OUTPUT_FORMATS, "json", ",".join(OUTPUT_FORMATS), "srt,vtt"]:
        assert pattern.fullmatch(value) and AwsSettings.from_env({"OUTPUT_FORMATS": value}), value
    for value in ["docx", "srt,", "srt vtt", "SRT"]:
        assert not pattern.fullmatch(value), value
    variables = [
        resource["Properties"]["Environment"]["Variables"]
        for resource in template["Resources"].values()
        if "OUTPUT_PREFIX" in resource.get("Properties", {}).get("Environment", {}).get("Variables", {})
    ]
    assert variables and all(found["OUTPUT_FORMATS"] == {"Ref": "OutputFormats"} for found in variables)
