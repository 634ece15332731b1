"""The service's Telemetry port on Powertools: EMF metrics and X-Ray subsegments."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from aws_lambda_powertools import Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

UNITS = {"Count": MetricUnit.Count, "Seconds": MetricUnit.Seconds, "None": MetricUnit.NoUnit}


class PowertoolsTelemetry:
    def __init__(self, metrics: Metrics, tracer: Tracer) -> None:
        self.metrics = metrics
        self.tracer = tracer

    def metric(self, name: str, unit: str, value: float) -> None:
        self.metrics.add_metric(name=name, unit=UNITS[unit], value=value)

    def failure(self, code: str) -> None:
        with single_metric(name="Failures", unit=MetricUnit.Count, value=1, namespace=self.metrics.namespace) as metric:
            metric.add_dimension(name="ErrorCode", value=code)

    def span(self, name: str) -> AbstractContextManager[Any]:
        return self.tracer.provider.in_subsegment(name)
