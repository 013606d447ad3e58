"""``from_pretrained``: config + safetensors -> :class:`Qwen35ForCausalLM` on a device, with a backend per op."""

from __future__ import annotations

import logging

import torch

from ..ops import _backend
from ..weights import CheckpointReader, build_plan, build_vision_plan, check_plan, load_plan, vision_prefix
from .config import Qwen35Config
from .model import Qwen35ForCausalLM

logger = logging.getLogger("qwen35_native")

# The ops the model calls ("linear": the layers' projections; the embedding, lm_head, MTP fc and the vision
# LayerNorm / GELU are torch / cuBLAS).
MODEL_OPS = ("rms_norm", "gdn_prefill", "gdn_decode", "attention_prep", "paged_prefill_attention",
             "paged_decode_attention", "moe_block", "swiglu_mlp", "varlen_attention", "linear")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_backends(backend: str | None, config: Qwen35Config | None = None,
                     dtype: torch.dtype | None = None) -> dict[str, str | None]:
    """Per-op backend: ``"kernel"`` runs our kernel where one exists and supports the model (``config``, ``dtype``;
    see ``ops._backend.MODEL_SUPPORT``) and the reference elsewhere (logged); ``"reference"`` everywhere pure torch;
    None/``"auto"`` lets each op choose per call (kernel on CUDA)."""
    if backend not in _backend.BACKENDS:
        raise ValueError(f"qwen35_native.from_pretrained: backend must be None, 'auto', 'kernel' or 'reference', "
                         f"got {backend!r}")
    if backend == "kernel":
        def pick(op):
            if not _backend.has_kernel(op):
                return "reference"
            why = None if config is None else _backend.kernel_unsupported_for_model(op, config, dtype)
            return "kernel" if why is None else "reference"
        return {op: pick(op) for op in MODEL_OPS}
    return {op: backend for op in MODEL_OPS}


def describe_backends(backends: dict[str, str | None], device: torch.device) -> str:
    kernel = [op for op, b in backends.items() if _backend.has_kernel(op) and
              (b == "kernel" or (b in (None, "auto") and device.type == "cuda"))]  # auto: per call, where supported
    ref = [op for op in backends if op not in kernel]
    where = "CUDA" if device.type == "cuda" else "the SIMT emulator"
    return (f"ops on our kernels ({where}): {', '.join(kernel) or 'none'}; "
            f"ops on the pure-torch reference: {', '.join(ref) or 'none'}")


def _check_kernel_build(backends: dict[str, str | None], device: torch.device) -> None:
    """backend='kernel' needs the kernels compiled for the device: CUDA kernels, or the emulator on the CPU."""
    from .. import _C

    if "kernel" not in backends.values():
        return
    built = bool(_C.WITH_EMULATOR) if device.type == "cpu" else bool(_C.WITH_CUDA)
    if not built:
        what = "the SIMT emulator (CPU)" if device.type == "cpu" else "the CUDA kernels"
        raise ValueError(f"qwen35_native.from_pretrained: backend='kernel' on {device} needs {what}, which this build "
                         f"of qwen35_native._C does not contain; use backend=None or 'reference'")


def _dtype(dtype, cfg: Qwen35Config) -> torch.dtype:
    if dtype is None:
        return DTYPES[cfg.text.dtype]
    if isinstance(dtype, str):
        dtype = DTYPES.get(dtype.replace("torch.", ""), dtype)
    if dtype not in DTYPES.values():
        raise ValueError(f"qwen35_native.from_pretrained: dtype must be float32, bfloat16 or float16, got {dtype!r}")
    return dtype


def from_pretrained(path: str, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None,
                    backend: str | None = None, load_mtp: bool = False, load_vision: bool | None = None,
                    progress: bool | None = None, transform=None) -> Qwen35ForCausalLM:
    """Loads a Qwen3.5 checkpoint directory (``config.json`` + ``model.safetensors`` or a sharded index).

    Args:
        path: checkpoint directory (release layout, transformers ``save_pretrained`` output, or a bare text model).
        device: where the parameters live; dtype: model dtype (default: the config's ``dtype``).
        backend: None/"auto", "kernel" or "reference" (see :func:`resolve_backends`).
        load_mtp: also load the ``mtp.*`` tensors into ``model.mtp`` (otherwise they are skipped).
        load_vision: load the vision tower (``model.visual.*`` tensors) into ``model.visual``: None (default) when
            the config has a ``vision_config`` and the checkpoint the tensors, True to require it, False to skip it.
        progress: show a progress bar while loading (default: when stderr is a terminal).
        transform: optional ``transform(model, plan) -> plan``: the model is then built on the meta device and
            ``transform`` must give it real parameters (on ``device``) and return the plan that fills them; tensor
            parallelism (``qwen35_native.parallel``) shards this way, so that a rank allocates and reads only its
            own slices.
    """
    config = Qwen35Config.from_file(path)
    device = torch.device(device)
    dtype = _dtype(dtype, config)
    backends = resolve_backends(backend, config, dtype)
    _check_kernel_build(backends, device)
    reader = CheckpointReader(path)
    try:
        plan, ignored = build_plan(config.text, reader.keys(), load_mtp=load_mtp)
        prefix = vision_prefix(ignored)
        with_vision = _want_vision(load_vision, config, prefix, path)
        if with_vision:
            plan.update(build_vision_plan(config.vision, prefix))
            ignored = {k for k in ignored if not k.startswith(prefix)}
        check_plan(plan, ignored, reader)
        model = Qwen35ForCausalLM(config, dtype, "meta" if transform else device, backends, with_mtp=load_mtp,
                                  with_vision=with_vision)
        if transform is not None:
            plan = transform(model, plan)
        load_plan(plan, dict(model.named_parameters()), reader, progress=progress)
    finally:
        reader.close()
    model.eval()
    logger.info("qwen35_native: loaded %s (%s, %d layers%s) on %s in %s; %s", path, config.text.model_type,
                config.text.num_hidden_layers, ", vision tower" if with_vision else "", device,
                str(dtype).replace("torch.", ""), describe_backends(backends, device))
    return model


def _want_vision(load_vision: bool | None, config: Qwen35Config, prefix: str | None, path: str) -> bool:
    if load_vision not in (None, True, False):
        raise ValueError(f"qwen35_native.from_pretrained: load_vision must be None, True or False, got {load_vision!r}")
    if load_vision is False:
        return False
    if load_vision and (config.vision is None or prefix is None):
        what = "config.json has no vision_config" if config.vision is None else "no model.visual.* tensors"
        raise ValueError(f"qwen35_native.from_pretrained: load_vision=True but {path} has {what}")
    if prefix is not None and config.vision is None:
        logger.info("qwen35_native: %s has vision tower tensors (%s*) but config.json has no vision_config: they are "
                    "left unused", path, prefix)
        return False
    return prefix is not None
