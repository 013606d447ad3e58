"""Memory-mapped access to a checkpoint's safetensors: one ``model.safetensors`` or shards listed in
``model.safetensors.index.json``. Tensors (or slices of them) are read one at a time; nothing is read at open
time beyond the headers. Every failure is a :class:`WeightsError` naming the tensor and the file."""

from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

# safetensors dtype names -> torch dtypes we can convert from (float weights only)
FLOAT_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


class WeightsError(ValueError):
    """A checkpoint problem: missing/unexpected tensor, wrong shape or dtype, unreadable or corrupt file."""


class CheckpointReader:
    """Key -> file map of a checkpoint directory, with lazily opened, memory-mapped safetensors files."""

    def __init__(self, path: str):
        self.path = path
        self._handles: dict[str, object] = {}
        if not os.path.isdir(path):
            raise WeightsError(f"{path}: not a checkpoint directory")
        index = os.path.join(path, INDEX_NAME)
        single = os.path.join(path, SINGLE_NAME)
        if os.path.exists(index):
            self.source = index
            try:
                with open(index, encoding="utf-8") as f:
                    weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise WeightsError(f"{index}: not a valid safetensors index (needs a 'weight_map' object): {e}") \
                    from None
            self.key_file = {k: os.path.join(path, v) for k, v in weight_map.items()}
            for file in sorted(set(self.key_file.values())):
                if not os.path.exists(file):
                    raise WeightsError(f"{index}: lists shard {os.path.basename(file)}, which does not exist")
        elif os.path.exists(single):
            self.source = single
            self.key_file = {k: single for k in self._open(single).keys()}  # noqa: SIM118 (not a dict)
        else:
            raise WeightsError(f"{path}: no {SINGLE_NAME} or {INDEX_NAME}")

    def _open(self, file: str):
        handle = self._handles.get(file)
        if handle is None:
            try:
                handle = safe_open(file, framework="pt", device="cpu")
            except Exception as e:  # safetensors raises its own error types for bad headers / short files
                raise WeightsError(f"{file}: cannot open as safetensors (truncated or corrupt?): {e}") from None
            self._handles[file] = handle
        return handle

    def keys(self) -> list[str]:
        return list(self.key_file)

    def file_of(self, key: str) -> str:
        return self.key_file[key]

    def _slice(self, key: str):
        file = self.key_file[key]
        try:
            return self._open(file).get_slice(key)
        except WeightsError:
            raise
        except Exception as e:
            raise WeightsError(f"tensor {key} in {file}: cannot be read ({e})") from None

    def shape(self, key: str) -> list[int]:
        return list(self._slice(key).get_shape())

    def dtype(self, key: str) -> str:
        return self._slice(key).get_dtype()

    def read(self, key: str, index: tuple = ()) -> torch.Tensor:
        """The tensor ``key`` or its sub-block ``index`` (a tuple of slices; only those bytes are read)."""
        file = self.key_file[key]
        s = self._slice(key)
        if s.get_dtype() not in FLOAT_DTYPES:
            raise WeightsError(f"tensor {key} in {file} has dtype {s.get_dtype()}; expected a float dtype "
                               f"({', '.join(FLOAT_DTYPES)}); quantised checkpoints are not supported")
        try:
            return s[index] if index else s[:]
        except Exception as e:
            raise WeightsError(f"tensor {key} in {file}: cannot be read (truncated or corrupt file?): {e}") from None

    def close(self) -> None:
        self._handles.clear()
