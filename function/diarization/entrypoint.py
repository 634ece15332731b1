"""One image, two hosts: `serve` (how SageMaker starts a container) runs the inference server; anything
else is a Lambda handler name for awslambdaric. Lambda passes the image's CMD, SageMaker passes `serve`."""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        from diarization.sagemaker.server import main as serve

        return serve()
    if argv[:1] == ["train"]:
        print("error: this image serves models; it does not train them", file=sys.stderr)
        return 2
    os.execv(sys.executable, [sys.executable, "-m", "awslambdaric", *argv])  # noqa: S606 - fixed program, argv passed as is


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
