"""The use cases, written once: diarize an object, complete a GPU inference, diarize synchronously.

No AWS import here. They talk to the outside through the small protocols in :mod:`ports`, take frozen
request values, and return typed outcomes (:mod:`outcomes`); per-call state (the invocation's deadline,
its request id) is passed in as an :class:`~diarization.service.model.Invocation`. Hosts (the Lambda
function, the SageMaker server) translate their input into one call and the outcome into their output.
"""
