"""Serverless speaker diarization: pyannote.audio behind Lambda and SageMaker.

Importing the package is cheap (no torch, no pyannote): adapters import what they need.
"""

__version__ = "0.1.0"
