"""The webhook signing secret: an SSM Parameter Store SecureString (WEBHOOK_SECRET_PARAMETER)."""

from __future__ import annotations

import time
from typing import Any

import boto3

from diarization.errors import ConfigurationError

SECRET_CACHE_SECONDS = 300.0
"""Read once per container and again after 5 minutes, so a rotated secret is picked up without a redeploy."""
MIN_SECRET_CHARS = 32


class SsmSecret:
    def __init__(self, parameter_name: str, client: Any | None = None) -> None:
        self.parameter_name = parameter_name
        self.client = client or boto3.client("ssm")
        self._value: bytes | None = None
        self._read_at = 0.0

    def __call__(self) -> bytes:
        if self._value is None or time.monotonic() - self._read_at > SECRET_CACHE_SECONDS:
            try:
                response = self.client.get_parameter(Name=self.parameter_name, WithDecryption=True)
            except self.client.exceptions.ParameterNotFound as error:
                raise ConfigurationError(
                    f"WEBHOOK_SECRET_PARAMETER: no SSM parameter {self.parameter_name!r}.",
                    setting="WEBHOOK_SECRET_PARAMETER",
                ) from error
            value = str(response["Parameter"]["Value"])
            if len(value) < MIN_SECRET_CHARS:
                raise ConfigurationError(
                    f"WEBHOOK_SECRET_PARAMETER: the secret in {self.parameter_name!r} is shorter than "
                    f"{MIN_SECRET_CHARS} characters.",
                    setting="WEBHOOK_SECRET_PARAMETER",
                )
            self._value, self._read_at = value.encode(), time.monotonic()
        return self._value
