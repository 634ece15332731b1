"""Lambda entry point: ``diarization.handler.lambda_handler``, with ``function/`` as the task root.

Importing this module is the function's init phase: it validates the configuration and loads the
pipeline once per container. A missing or broken model is therefore an init error, never a
per-request surprise.
"""

from diarization.aws.app import FunctionApp

app = FunctionApp()
lambda_handler = app.lambda_handler
