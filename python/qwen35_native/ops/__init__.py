"""Kernel ops with their pure-torch references. Each function takes ``backend=None|"auto"|"kernel"|"reference"``
(see ``_backend.py``) and validates its inputs the same way for every backend."""

from .norm import rms_norm, rms_norm_reference

__all__ = ["rms_norm", "rms_norm_reference"]
