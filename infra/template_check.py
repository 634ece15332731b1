"""The real SAM transform, offline, and the template's Conditions evaluated for a set of parameters.

`transform()` needs aws-sam-translator, which lives in the tools venv next to the SAM CLI (it pins boto3 and
pydantic versions the app venv does not want). From any other interpreter use `transformed()`, which runs this
module under the tools venv and reads the JSON it prints:

    .venv-tools/bin/python infra/template_check.py template.yaml [--parameter Name=Value ...] > transformed.json

The transform keeps Conditions for CloudFormation to decide; `active_resources()` evaluates them the way
CloudFormation would for given parameter values, so checks can look at what one deployment would create.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOOLS_PYTHON = ROOT / ".venv-tools" / "bin" / "python"
REGION = "us-east-1"
# Stands in for the image `sam build` pushes; the transform insists on one for PackageType Image functions.
PLACEHOLDER_IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/diarization:latest"
# Stands in for the artifact bucket `sam package` uploads local files (a state machine's definition) to.
PLACEHOLDER_ARTIFACT_BUCKET = "sam-artifacts-123456789012"


def transform(path: Path, parameters: dict[str, str], region: str = REGION) -> dict[str, Any]:
    """SAM template -> CloudFormation template, exactly as the `AWS::Serverless-2016-10-31` transform does it."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator
    from samtranslator.yaml_helper import yaml_parse

    template = yaml_parse(path.read_text())
    for resource in template.get("Resources", {}).values():
        properties = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and properties.get("PackageType") == "Image":
            properties.setdefault("ImageUri", PLACEHOLDER_IMAGE_URI)
        uri = properties.get("DefinitionUri")
        if resource.get("Type") == "AWS::Serverless::StateMachine" and isinstance(uri, str):
            properties["DefinitionUri"] = packaged_definition_uri(path.parent, uri)
    # No credentials are needed: managed policies are referenced by ARN, and the nested application is a local
    # path (the plugin asks the Serverless Application Repository only for ApplicationId/SemanticVersion pairs).
    translator = Translator(None, Parser(), plugins=[], boto_session=boto3.Session(region_name=region))
    result: dict[str, Any] = translator.translate(template, dict(parameters), get_managed_policy_map=dict)
    return result


def packaged_definition_uri(root: Path, uri: str) -> str:
    """A state machine's local DefinitionUri as `sam package` leaves it: an S3 location (the transform accepts
    nothing else; `sam validate` makes the same substitution). Nothing is uploaded; the file must exist."""
    if uri.startswith("s3://"):
        return uri
    if not (root / uri).is_file():
        raise FileNotFoundError(f"DefinitionUri {uri} does not exist under {root}")
    return f"s3://{PLACEHOLDER_ARTIFACT_BUCKET}/{uri}"


def transformed(path: Path, parameters: dict[str, str] | None = None, timeout: float = 120) -> dict[str, Any]:
    """`transform()` run under the tools venv (from the app venv, which has no samtranslator)."""
    command = [str(TOOLS_PYTHON), str(Path(__file__).resolve()), str(path)]
    for name, value in (parameters or {}).items():
        command += ["--parameter", f"{name}={value}"]
    env = {**os.environ, "AWS_DEFAULT_REGION": REGION, "SAM_CLI_TELEMETRY": "0"}
    # AWS_ENDPOINT_URL (a moto server in the tests) is irrelevant to the transform; keep it from reaching boto3.
    env.pop("AWS_ENDPOINT_URL", None)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"SAM transform of {path} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def parameter_values(template: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """Template defaults, overridden; pseudo parameters as CloudFormation would set them."""
    values: dict[str, Any] = {
        name: spec.get("Default") for name, spec in template.get("Parameters", {}).items() if "Default" in spec
    }
    values.update(overrides)
    values.update({"AWS::Region": REGION, "AWS::AccountId": "123456789012", "AWS::Partition": "aws"})
    return values


def evaluate_conditions(template: dict[str, Any], overrides: dict[str, str]) -> dict[str, bool]:
    """The value of every entry under Conditions (Fn::Equals/Not/And/Or, Condition, Ref to parameters)."""
    values = parameter_values(template, overrides)
    conditions: dict[str, Any] = template.get("Conditions", {})
    resolved: dict[str, bool] = {}

    def value(node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((key, argument),) = node.items()
            if key == "Ref":
                if argument not in values:
                    raise KeyError(f"parameter {argument} has no value")
                return values[argument]
            if key == "Condition":
                return condition(argument)
            if key == "Fn::Equals":
                left, right = (str(value(item)) for item in argument)
                return left == right
            if key == "Fn::Not":
                return not value(argument[0])
            if key == "Fn::And":
                return all(value(item) for item in argument)
            if key == "Fn::Or":
                return any(value(item) for item in argument)
            raise ValueError(f"unsupported in a condition: {key}")
        return node

    def condition(name: str) -> bool:
        if name not in resolved:
            resolved[name] = bool(value(conditions[name]))
        return resolved[name]

    return {name: condition(name) for name in conditions}


def active_resources(template: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """The resources a deployment with these parameter values creates (their Condition holds, or they have none)."""
    conditions = evaluate_conditions(template, overrides)
    return {
        name: resource
        for name, resource in template.get("Resources", {}).items()
        if "Condition" not in resource or conditions[resource["Condition"]]
    }


_NO_VALUE = object()


def resolve_conditions(template: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """A copy for these parameter values: resources whose Condition fails removed, every Fn::If replaced by the
    branch it takes, AWS::NoValue removed from lists and mappings. What remains is what CloudFormation creates."""
    conditions = evaluate_conditions(template, overrides)

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if node == {"Ref": "AWS::NoValue"}:
                return _NO_VALUE
            if set(node) == {"Fn::If"}:
                name, when_true, when_false = node["Fn::If"]
                return resolve(when_true if conditions[name] else when_false)
            items = ((key, resolve(value)) for key, value in node.items())
            return {key: value for key, value in items if value is not _NO_VALUE}
        if isinstance(node, list):
            return [item for item in map(resolve, node) if item is not _NO_VALUE]
        return node

    resolved: dict[str, Any] = resolve({key: value for key, value in template.items() if key != "Resources"})
    resolved["Resources"] = {
        name: {key: resolve(value) for key, value in resource.items() if key != "Condition"}
        for name, resource in active_resources(template, overrides).items()
    }
    for name, output in list(resolved.get("Outputs", {}).items()):
        if "Condition" in output and not conditions[output["Condition"]]:
            del resolved["Outputs"][name]
    return resolved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", type=Path)
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", REGION))
    args = parser.parse_args(argv)
    parameters = dict(item.split("=", 1) for item in args.parameter)
    json.dump(transform(args.template, parameters, args.region), sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
