"""The verification snippet of docs/lambda.md#webhooks, executed as a receiver would copy it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

LAMBDA_PAGE = Path(__file__).resolve().parents[2] / "docs" / "lambda.md"

Verify = Callable[[str, str, dict[str, str], bytes], bool]
"""verify(key, url, headers, body): `key` the owner's `webhook_signing_key`, `url` its `callback_url`."""


def readme_verify() -> Verify:
    text = LAMBDA_PAGE.read_text()
    section = text[text.index("\n## Webhooks\n") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/lambda.md, Webhooks: no Python snippet"
    scope: dict[str, Any] = {}
    exec(match.group(1), scope)  # noqa: S102 (our own docs, the point of the test)
    verify: Verify = scope["verify"]
    return verify
