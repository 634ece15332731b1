"""What the DynamoDB ports share: conditional writes, whose failed condition is an answer, not an error."""

from __future__ import annotations

from collections.abc import Callable

from botocore.exceptions import ClientError


def conditionally(write: Callable[[], object]) -> bool:
    """Run one conditional write; False when its condition did not hold (a newer record, an ended job)."""
    try:
        write()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True
