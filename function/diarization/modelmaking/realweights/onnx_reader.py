"""Read the initializers (stored tensors) of an ONNX model without the ``onnx`` package.

An ONNX file is one protobuf ``ModelProto``. Reading its stored tensors needs four fields of a
schema that has been stable since ONNX 1.0, so a ~60-line wire-format reader replaces a new
dependency (``onnx`` would have to enter the locked requirements for one build step).
Field numbers are those of onnx/onnx.proto: ModelProto.graph = 7, GraphProto.initializer = 5,
TensorProto.dims = 1, data_type = 2, float_data = 4, int64_data = 7, name = 8, raw_data = 9.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_DIMS, _TENSOR_TYPE, _TENSOR_FLOATS, _TENSOR_INT64S, _TENSOR_NAME, _TENSOR_RAW = 1, 2, 4, 7, 8, 9
_DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype("<f4"), 6: np.dtype("<i4"), 7: np.dtype("<i8"), 11: np.dtype("<f8")}
"""TensorProto.DataType: FLOAT, INT32, INT64, DOUBLE, the types an exported network stores."""

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class OnnxFormatError(ValueError):
    """The bytes are not an ONNX model this reader understands."""


def read_initializers(path: Path) -> dict[str, np.ndarray]:
    """Every initializer of the model's main graph, by name, as a numpy array of its stored shape."""
    data = memoryview(path.read_bytes())
    graphs = [value for number, value in _fields(data) if number == _MODEL_GRAPH]
    if len(graphs) != 1 or not isinstance(graphs[0], memoryview):
        raise OnnxFormatError(f"{path} has no ONNX graph")
    tensors = dict(
        _tensor(value)
        for number, value in _fields(graphs[0])
        if number == _GRAPH_INITIALIZER and isinstance(value, memoryview)
    )
    if not tensors:
        raise OnnxFormatError(f"{path} stores no tensors")
    return tensors


def _tensor(message: memoryview) -> tuple[str, np.ndarray]:
    dims: list[int] = []
    name, data_type, raw = "", 0, b""
    floats: list[memoryview] = []
    int64s: list[memoryview] = []
    for number, value in _fields(message):
        if number == _TENSOR_DIMS:
            dims.extend(_packed_varints(value) if isinstance(value, memoryview) else [value])
        elif number == _TENSOR_TYPE and isinstance(value, int):
            data_type = value
        elif number == _TENSOR_NAME and isinstance(value, memoryview):
            name = bytes(value).decode()
        elif number == _TENSOR_RAW and isinstance(value, memoryview):
            raw = bytes(value)
        elif number == _TENSOR_FLOATS and isinstance(value, memoryview):
            floats.append(value)
        elif number == _TENSOR_INT64S and isinstance(value, memoryview):
            int64s.append(value)
    if data_type not in _DTYPES:
        raise OnnxFormatError(f"tensor {name!r} has unsupported data type {data_type}")
    dtype = _DTYPES[data_type]
    if raw:
        array = np.frombuffer(raw, dtype=dtype)
    elif floats:
        array = np.frombuffer(b"".join(bytes(chunk) for chunk in floats), dtype="<f4")
    else:
        array = np.array([v for chunk in int64s for v in _packed_varints(chunk)], dtype=dtype)
    return name, array.reshape(dims).copy()


def _fields(message: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) pairs: an int for varints, the bytes otherwise."""
    position, end = 0, len(message)
    while position < end:
        key, position = _varint(message, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, position = _varint(message, position)
            yield number, value
        elif wire_type == _LENGTH_DELIMITED:
            length, position = _varint(message, position)
            yield number, message[position : position + length]
            position += length
        elif wire_type in (_FIXED64, _FIXED32):
            size = 8 if wire_type == _FIXED64 else 4
            yield number, message[position : position + size]
            position += size
        else:
            raise OnnxFormatError(f"unsupported protobuf wire type {wire_type}")
    if position != end:
        raise OnnxFormatError("truncated protobuf message")


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise OnnxFormatError("truncated protobuf varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, position


def _packed_varints(data: memoryview) -> list[int]:
    values, position = [], 0
    while position < len(data):
        value, position = _varint(data, position)
        values.append(value)
    return values
