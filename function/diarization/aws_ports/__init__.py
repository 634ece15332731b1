"""AWS implementations of the service's ports, one module per AWS service, each class named after its technology:
``s3`` (and ``s3_voiceprints``), ``dynamodb_jobs`` and ``dynamodb_ordering`` (sharing ``dynamodb``), ``eventbridge``,
``sagemaker``, ``stepfunctions``, ``sqs``, ``ssm``; ``webhook_http`` is the webhook sender (HTTPS, no AWS).

Shared by both hosts: the Lambda function (``diarization.aws``) and the SageMaker server import them;
they import neither host, and take their settings as plain values.
"""
