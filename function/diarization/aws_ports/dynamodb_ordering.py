"""The per-key ordering record in DynamoDB (ORDERING_TABLE, hash key ``object`` = ``{bucket}/{key}``).

One small item per input key, changed only by a conditional write (see ``diarization.service.ordering``).
No TTL: the record must outlive the outputs it protects.
"""

from __future__ import annotations

from typing import Any

import boto3

from diarization.aws_ports.dynamodb import conditionally
from diarization.service.ordering import Order


class DynamoOrdering:
    def __init__(self, table_name: str, resource: Any | None = None) -> None:
        self.table = (resource or boto3.resource("dynamodb")).Table(table_name)

    def claim(self, bucket: str, key: str, order: Order, succeeded: bool) -> bool:
        """True when outputs may be written for `order`: no record yet, the same version (a re-run with other
        hints), or an older or equally old other version. A failure never replaces a success of the same version."""
        if succeeded:
            condition = "attribute_not_exists(#obj) OR #ver = :ver OR #pos <= :pos"
        else:
            condition = (
                "attribute_not_exists(#obj) OR (#ver = :ver AND #ok = :false) OR (#ver <> :ver AND #pos <= :pos)"
            )
        values: dict[str, Any] = {":pos": order.position, ":ver": order.version}
        if not succeeded:
            values[":false"] = False
        names = {"#obj": "object", "#pos": "position", "#ver": "version"}
        if not succeeded:
            names["#ok"] = "ok"
        item = {"object": f"{bucket}/{key}", "position": order.position, "version": order.version, "ok": succeeded}
        return conditionally(
            lambda: self.table.put_item(
                Item=item,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        )
