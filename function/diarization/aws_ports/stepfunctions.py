"""Starting the fan-out state machine (``statemachine/fanout.asl.json``): one StartExecution per run."""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.exceptions import ClientError


class StepFunctionsFanOut:
    def __init__(self, state_machine_arn: str, client: Any | None = None) -> None:
        self.state_machine = state_machine_arn
        self.client = client or boto3.client("stepfunctions")

    def start(self, name: str) -> bool:
        """The input names the execution and nothing else: each step reads what it needs from the routing record and
        the staged objects, not from the state (see ``diarization.service.fanout``). Step Functions answers a second
        start of a running execution with the same name and input with the first one's ARN, and refuses any other
        start of a name it has used (ExecutionAlreadyExists, kept 90 days): both mean the run has started already."""
        try:
            self.client.start_execution(
                stateMachineArn=self.state_machine, name=name, input=json.dumps({"execution": name})
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
                return False
            raise
        return True
