"""Step Functions on this machine: moto executes the template's own state machine definition, and each Lambda task it
invokes runs the project's real handler under the official runtime emulator.

moto 5.2.5 interprets Amazon States Language when `execute_state_machine` is on (see ../shared/NOTES.md), but it runs
Lambda code only in Docker images it pulls from a registry. So, in the process that runs the moto server (the tests'
in-process ThreadedMotoServer), ``LambdaFunction._invoke_lambda`` is replaced for the functions registered here: each
invocation goes to a runtime emulator (``infra/runtime_emulator.py``) running ``python -m awslambdaric HANDLER`` with
the function's environment. One emulator serves one request at a time (the emulator fails on concurrent invokes), so
the Map state's parallel shards get emulators of their own, started on demand and reused.

What Step Functions sees is what it sees in AWS: a handler's exception is a function error named by its ``errorType``
(what Retry and Catch match); a runtime that dies (killed, out of memory, timed out: the emulator's
``Runtime.ExitError`` / ``Sandbox.Timedout``) is ``Lambda.Unknown``, the name Step Functions gives unhandled Lambda
failures. A function given a ``reserved_concurrency`` answers an invocation beyond it as Lambda does: HTTP 429
``TooManyRequestsException`` from the Invoke API, which Step Functions names ``Lambda.TooManyRequestsException`` (what
the definition's throttling Retry matches; each refusal is a TaskFailed in the execution's history).

The state machine is created from the template's ``AWS::Serverless::StateMachine``: the file its DefinitionUri names,
with the DefinitionSubstitutions applied (values given by the caller for exactly the template's keys), so the tests
run the definition that deploys.
"""

from __future__ import annotations

import json
import os
import queue
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import yaml
from moto.awslambda.exceptions import LambdaClientError
from moto.awslambda.models import LambdaFunction

from infra.runtime_emulator import Emulator

ACCOUNT = "123456789012"
PLACEHOLDER_IMAGE_URI = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/diarization:local"
RUNTIME_FAILURES = ("Runtime.", "Sandbox.")
"""The emulator's own error types for a runtime that died: Step Functions reports such failures as Lambda.Unknown."""
TERMINAL = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


class ThrottledError(LambdaClientError):
    """Lambda's Invoke answer while the function's reserved concurrency is all in use."""

    code = 429

    def __init__(self) -> None:
        super().__init__("TooManyRequestsException", "Rate Exceeded.")


class LocalFunction:
    """One function: a pool of emulators, each serving one request at a time, and at most ``reserved_concurrency``
    requests at once when it is set (the rest are throttled)."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        command: list[str],
        log_dir: Path,
        timeout: float,
        reserved_concurrency: int | None = None,
    ) -> None:
        self.name = name
        self.reserved_concurrency = reserved_concurrency
        self.running = 0
        self.throttled: list[Any] = []
        """The events refused for want of concurrency, in order."""
        self.env = env
        self.command = command
        self.log_dir = log_dir
        self.timeout = timeout
        self.idle: queue.SimpleQueue[Emulator] = queue.SimpleQueue()
        self.started: list[Emulator] = []
        self.invocations: list[dict[str, Any]] = []
        """Every event and its answer, in the order they ended (for the tests' assertions)."""
        self.lock = threading.Lock()

    def invoke(self, event: Any) -> tuple[str, bool]:
        """The payload Lambda would answer with, and whether it is a function error; raises ``ThrottledError``."""
        with self.lock:
            if self.reserved_concurrency is not None and self.running >= self.reserved_concurrency:
                self.throttled.append(event)
                raise ThrottledError()
            self.running += 1
        try:
            status, body = self._run(event)
        finally:
            with self.lock:
                self.running -= 1
        errored = isinstance(body, dict) and "errorType" in body and ("errorMessage" in body or status != 200)
        if status != 200 and not errored:
            body, errored = {"errorType": "Runtime.ExitError", "errorMessage": str(body)[:1000]}, True
        if errored and str(body["errorType"]).startswith(RUNTIME_FAILURES):
            body = {
                **body,
                "errorType": "Lambda.Unknown",
                "errorMessage": f"{body['errorType']}: {body['errorMessage']}",
            }
        with self.lock:
            self.invocations.append({"event": event, "status": status, "answer": body, "errored": errored})
        return json.dumps(body), errored

    def _run(self, event: Any) -> tuple[int, Any]:
        emulator = self._take()
        try:
            status, body = emulator.invoke(event, timeout=self.timeout)
        except (urllib.error.URLError, OSError) as error:
            status, body = 502, {"errorType": "Runtime.ExitError", "errorMessage": f"emulator unreachable: {error}"}
        self.idle.put(emulator)
        return status, body

    def logs(self) -> str:
        return "\n".join(emulator.logs() for emulator in self.started)

    def stop(self) -> None:
        for emulator in self.started:
            emulator.stop()

    def _take(self) -> Emulator:
        try:
            return self.idle.get_nowait()
        except queue.Empty:
            pass
        with self.lock:
            emulator = Emulator(self.env, self.command)
            self.started.append(emulator)
            log = self.log_dir / f"{self.name}-{len(self.started)}.log"
        emulator.start(log)
        return emulator


class LocalStepFunctions:
    """Use as a context manager around a moto server that runs in this process (``local_aws.start_local_aws``)."""

    def __init__(self, endpoint: str, log_dir: Path, invoke_timeout: float = 300) -> None:
        self.endpoint = endpoint
        self.log_dir = log_dir
        self.invoke_timeout = invoke_timeout
        self.functions: dict[str, LocalFunction] = {}
        self._saved_port: str | None = None
        self._original: Any = None

    def __enter__(self) -> LocalStepFunctions:
        # moto's interpreter calls Lambda through boto3 at localhost:$MOTO_PORT (default 5000): this server's port.
        self._saved_port = os.environ.get("MOTO_PORT")
        os.environ["MOTO_PORT"] = self.endpoint.rsplit(":", 1)[-1]
        _moto_config(self.endpoint, {"stepfunctions": {"execute_state_machine": True}})
        self._original = LambdaFunction._invoke_lambda
        functions, original = self.functions, self._original

        def invoke_lambda(function: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
            local = functions.get(function.function_name)
            if local is None:
                return original(function, event)  # type: ignore[no-any-return]
            payload, errored = local.invoke(event if event is not None else {})
            return payload, errored, ""

        LambdaFunction._invoke_lambda = invoke_lambda  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        LambdaFunction._invoke_lambda = self._original  # type: ignore[method-assign]
        _moto_config(self.endpoint, {"stepfunctions": {"execute_state_machine": False}})
        if self._saved_port is None:
            os.environ.pop("MOTO_PORT", None)
        else:
            os.environ["MOTO_PORT"] = self._saved_port
        for function in self.functions.values():
            function.stop()

    def add_function(
        self,
        name: str,
        env: dict[str, str],
        handler: str = "diarization.handler.lambda_handler",
        reserved_concurrency: int | None = None,
    ) -> str:
        """Create the function in moto's Lambda (an image function: moto does not look the image up) and run it
        here; its ARN."""
        iam = boto3.client("iam")
        role = f"{name}-role"
        trust = {
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ]
        }
        arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        created = boto3.client("lambda").create_function(
            FunctionName=name, PackageType="Image", Code={"ImageUri": PLACEHOLDER_IMAGE_URI}, Role=arn, Timeout=900
        )
        command = [sys.executable, "-m", "awslambdaric", handler]
        self.functions[name] = LocalFunction(
            name, env, command, self.log_dir, self.invoke_timeout, reserved_concurrency
        )
        return str(created["FunctionArn"])

    def create_state_machine(self, template: Path, name: str, substitutions: dict[str, str]) -> str:
        """The template's one state machine, from its definition file with `substitutions` (exactly its keys)."""
        definition_uri, keys = state_machine_definition(template)
        if set(substitutions) != keys:
            raise ValueError(f"the template substitutes {sorted(keys)}, not {sorted(substitutions)}")
        text = (template.parent / definition_uri).read_text()
        definition = re.sub(r"\$\{(\w+)\}", lambda match: substitutions[match[1]], text)
        json.loads(definition)  # what CloudFormation would refuse
        role = f"arn:aws:iam::{ACCOUNT}:role/{name}-role"
        created = boto3.client("stepfunctions").create_state_machine(name=name, definition=definition, roleArn=role)
        return str(created["stateMachineArn"])

    @staticmethod
    def wait(execution_arn: str, timeout: float = 300) -> dict[str, Any]:
        """The execution's description once it has ended."""
        client = boto3.client("stepfunctions")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            described: dict[str, Any] = client.describe_execution(executionArn=execution_arn)
            if described["status"] in TERMINAL:
                return described
            time.sleep(0.2)
        raise TimeoutError(f"{execution_arn} did not end within {timeout} s")


def state_machine_definition(template: Path) -> tuple[str, set[str]]:
    """(DefinitionUri, DefinitionSubstitutions' keys) of the template's one AWS::Serverless::StateMachine."""
    body = yaml.load(template.read_text(), Loader=_CloudFormationLoader)  # noqa: S506 - a safe loader subclass
    machines = [r for r in body["Resources"].values() if r.get("Type") == "AWS::Serverless::StateMachine"]
    if len(machines) != 1:
        raise ValueError(f"{template} has {len(machines)} state machines, expected 1")
    properties = machines[0]["Properties"]
    return str(properties["DefinitionUri"]), set(properties.get("DefinitionSubstitutions", {}))


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, ...), kept as {"Fn::X": value}."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_CloudFormationLoader.add_multi_constructor("!", _tag)


def _moto_config(endpoint: str, config: dict[str, Any]) -> None:
    request = urllib.request.Request(  # noqa: S310 - the local moto server
        f"{endpoint}/moto-api/config", data=json.dumps(config).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - the local moto server
        pass
