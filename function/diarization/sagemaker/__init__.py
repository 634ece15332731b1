"""SageMaker adapters: the inference server a GPU container runs, and the completion of async jobs."""
