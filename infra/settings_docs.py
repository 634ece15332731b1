"""Rewrites the generated variable tables of docs/configuration.md from the settings tables in the code.

    make docs-config                          # or: python -m infra.settings_docs
    python -m infra.settings_docs --check     # exit 1 (and say so) when the page is out of date

Each table lives beside the dataclass it fills (``SETTINGS_TABLE`` in diarization.core.config, ``AWS_TABLE`` in
diarization.aws.settings, ``WEBHOOK_TABLE`` in diarization.aws.webhooks, ``SERVER_TABLE`` in
diarization.sagemaker.server); the page holds each between
``<!-- generated: {title} -->`` and ``<!-- end generated -->``. tests/unit/test_settings_table.py runs the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diarization.core.environment import Table

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "configuration.md"
COMMAND = "make docs-config"


def tables() -> tuple[Table, ...]:
    """Every settings table, in page order."""
    from diarization.aws.settings import AWS_TABLE
    from diarization.aws.webhooks import WEBHOOK_TABLE
    from diarization.core.config import SETTINGS_TABLE
    from diarization.sagemaker.server import SERVER_TABLE

    return SETTINGS_TABLE, AWS_TABLE, WEBHOOK_TABLE, SERVER_TABLE


def expected_page(page: Path = PAGE) -> str:
    """The page as it should be: its text with every generated block rendered afresh from the tables."""
    from diarization.core.environment import rewrite

    return rewrite(page.read_text(encoding="utf-8"), tables())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "function"))  # this checkout's package, whatever the venv has installed
    expected = expected_page()
    if PAGE.read_text(encoding="utf-8") == expected:
        print(f"{PAGE.relative_to(ROOT)} is up to date.")
        return 0
    if args.check:
        print(f"{PAGE.relative_to(ROOT)} differs from the settings tables: run `{COMMAND}`.", file=sys.stderr)
        return 1
    PAGE.write_text(expected, encoding="utf-8")
    print(f"{PAGE.relative_to(ROOT)}: generated tables rewritten.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
