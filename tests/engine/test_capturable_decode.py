"""The decode step is CUDA-graph capturable, checked without a GPU: the model's cached forward of a decode batch and
the sampler run on fake CUDA tensors (torch's FakeTensorMode; our ops' fake implementations) as if a capture were
in progress. A capture fails on a host read of device data (a pure-torch reference's .tolist()/.item(): fake
tensors raise on them too) and on a copy between host and device memory (recorded here: any op with a CUDA tensor
and a host tensor that is not a scalar). The plain model and a tensor-parallel world of one (vocab-parallel
embedding and logits, all-reduce hooks) on the kernel backend, bf16: what the engine captures on a GPU."""

import dataclasses

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import qwen35_native as q35
from qwen35_native.engine.sampling import SamplingParams, SamplingTensors, sample
from qwen35_native.model import ForwardBatch
from qwen35_native.parallel import load_sharded
from qwen35_native.parallel.groups import TPContext
from qwen35_native.tiny import write_tiny_checkpoint

BLOCK = 64  # the attention kernels' block size (smaller ones fall back to the uncapturable reference)


class HostDeviceTraffic(TorchDispatchMode):
    """Records ops whose arguments mix CUDA tensors with host tensors of more than one element."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        flat, _ = tree_flatten((args, kwargs or {}))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        if any(t.is_cuda for t in tensors) and any(t.device.type == "cpu" and t.dim() > 0 for t in tensors):
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def tiny_kernel_dir(tmp_path_factory):
    return write_tiny_checkpoint(str(tmp_path_factory.mktemp("capturable") / "tiny-kernel"), "tiny-kernel", seed=6)


def _to_fake_cuda(model, mode):
    with mode:
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is not None:
                    module._parameters[name] = torch.nn.Parameter(p.to("cuda"), requires_grad=False)


@pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor")  # the alignment check in ops
@pytest.mark.parametrize("kind", ["plain", "tp-world-of-one"])
def test_decode_step_has_no_host_sync_or_transfer(tiny_kernel_dir, kind, monkeypatch):
    if kind == "plain":
        model = q35.from_pretrained(tiny_kernel_dir, backend="kernel", dtype=torch.bfloat16)
    else:
        model = load_sharded(tiny_kernel_dir, TPContext(0, 1, torch.device("cpu")), backend="kernel",
                             dtype=torch.bfloat16)
    # what the host builds before a step (static buffers in the engine's graphs), on the host, then moved
    table = torch.tensor([[0, 1], [2, 3], [4, 5]], dtype=torch.int32)
    batch = ForwardBatch.build([1, 1, 1], [5, 70, 9], [0, 1, 2], table, BLOCK, "cpu", logits="last")
    params = [SamplingParams(temperature=0).resolved(), SamplingParams(temperature=0.8, top_k=5, seed=1).resolved(),
              SamplingParams(temperature=0.7, top_p=0.9, min_p=0.05, seed=2).resolved()]
    packed, flags = SamplingTensors.pack(params, [0, 0, 0], model.text_config.vocab_size)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    _to_fake_cuda(model, mode)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    traffic = HostDeviceTraffic()
    with mode:
        cache = model.allocate_cache(6, BLOCK, 3)
        batch = dataclasses.replace(batch, **{f.name: getattr(batch, f.name).to("cuda")
                                              for f in dataclasses.fields(batch)
                                              if isinstance(getattr(batch, f.name), torch.Tensor)})
        ids, rows = torch.tensor([3, 7, 11]).to("cuda"), packed.to("cuda")
        with traffic, torch.inference_mode():
            logits = model.forward_cached(ids, batch, cache)
            out = sample(logits, SamplingTensors.from_packed(rows, flags, model.text_config.vocab_size))
    assert logits.is_cuda and logits.shape == (3, model.text_config.vocab_size)
    assert out.token_ids.is_cuda and out.token_ids.shape == (3,)
    assert traffic.ops == [], f"host <-> device traffic inside the decode step: {traffic.ops}"


@pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor")
def test_verification_step_and_mtp_have_no_host_sync_or_transfer(tiny_kernel_dir, monkeypatch):
    """Speculative decoding's device work (engine/spec_decode.py) is capturable too, the groundwork for running it
    in CUDA graphs: a verification forward of 3 sequences x (pending token + 2 drafts) through the decode ops with
    scratch GDN slots, the sampler over every position, and the MTP head over the rows."""
    model = q35.from_pretrained(tiny_kernel_dir, backend="kernel", dtype=torch.bfloat16, load_mtp=True)
    table = torch.tensor([[0, 1], [2, 3], [4, 5]], dtype=torch.int32)
    batch = ForwardBatch.build([3, 3, 3], [5, 70, 9], [0, 1, 2], table, BLOCK, "cpu", logits="all",
                               decode_width=3, spec_scratch=[[3, 4], [5, 6], [7, 8]])
    params = [SamplingParams(temperature=0.8, top_k=5, seed=1).resolved()] * 9
    packed, flags = SamplingTensors.pack(params, list(range(9)), model.text_config.vocab_size)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    _to_fake_cuda(model, mode)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    traffic = HostDeviceTraffic()
    with mode:
        cache = model.allocate_cache(6, BLOCK, 9, with_mtp=True)
        batch = dataclasses.replace(batch, **{f.name: getattr(batch, f.name).to("cuda")
                                              for f in dataclasses.fields(batch)
                                              if isinstance(getattr(batch, f.name), torch.Tensor)})
        ids, rows = torch.arange(3, 12).to("cuda"), packed.to("cuda")
        with traffic, torch.inference_mode():
            logits, hidden = model.forward_cached(ids, batch, cache, return_hidden=True)
            out = sample(logits, SamplingTensors.from_packed(rows, flags, model.text_config.vocab_size))
            drafts = model.compute_logits(model.forward_mtp(out.token_ids, hidden, batch, cache)).argmax(-1)
    assert out.token_ids.shape == (9,) and drafts.is_cuda and drafts.shape == (9,)
    assert traffic.ops == [], f"host <-> device traffic inside the verification step: {traffic.ops}"
