"""AWS adapters around the core engine: S3, SQS, EventBridge, API Gateway, DynamoDB.

Nothing here imports torch or pyannote; the core (``diarization.core.engine``) imports no AWS library.
"""
