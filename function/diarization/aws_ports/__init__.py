"""AWS implementations of the service's ports (S3, DynamoDB, EventBridge, SageMaker), one module each.

Shared by both hosts: the Lambda function (``diarization.aws``) and the SageMaker server import them;
they import neither host.
"""
