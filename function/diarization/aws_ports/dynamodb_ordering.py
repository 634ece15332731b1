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
        hints), or an older or equally old other version (``diarization.service.ordering.not_older``: by sequencer
        when both have one, else by position). A failure never replaces a success of the same version."""
        held_older = _held_older(bool(order.sequencer))
        if succeeded:
            condition = f"attribute_not_exists(#obj) OR #ver = :ver OR {held_older}"
        else:
            condition = (
                f"attribute_not_exists(#obj) OR (#ver = :ver AND #ok = :false) OR (#ver <> :ver AND {held_older})"
            )
        values: dict[str, Any] = {":pos": order.position, ":ver": order.version}
        names = {"#obj": "object", "#pos": "position", "#ver": "version"}
        if not succeeded:
            values[":false"], names["#ok"] = False, "ok"
        if order.sequencer:
            values[":seq"], names["#seq"] = order.sequencer, "sequencer"
        item = {"object": f"{bucket}/{key}", "position": order.position, "version": order.version, "ok": succeeded}
        if order.sequencer:
            item["sequencer"] = order.sequencer  # absent otherwise: "held without a sequencer"
        return conditionally(
            lambda: self.table.put_item(
                Item=item,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        )


def _held_older(has_sequencer: bool) -> str:
    """The held record is not newer than the claim: by sequencer when both have one, else by position. Records
    written before the `sequencer` attribute existed have none and are compared by position, as they were."""
    if not has_sequencer:
        return "#pos <= :pos"
    return "((attribute_exists(#seq) AND #seq <= :seq) OR (attribute_not_exists(#seq) AND #pos <= :pos))"
