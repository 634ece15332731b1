"""AWS adapters around the core engine: S3, SQS, EventBridge, API Gateway, DynamoDB.

Nothing here imports torch or pyannote; the core (``diarization.engine``) imports no AWS library.
"""
