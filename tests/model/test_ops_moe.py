"""MoE ops (routing, routed experts, whole block with the shared expert, expert-parallel subsets) and the dense
SwiGLU MLP against transformers' modules, plus routing ties and input validation."""

import pytest
import torch

from qwen35_native import ops

M = pytest.importorskip("transformers.models.qwen3_5_moe.modeling_qwen3_5_moe")
transformers = pytest.importorskip("transformers")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def hf_block(H=64, E=8, k=3, inter=32, shared=48, seed=0):
    cfg = transformers.Qwen3_5MoeTextConfig(hidden_size=H, num_experts=E, num_experts_per_tok=k, num_hidden_layers=1,
                                            moe_intermediate_size=inter, shared_expert_intermediate_size=shared)
    cfg._experts_implementation = "eager"
    block = M.Qwen3_5MoeSparseMoeBlock(cfg)
    g = gen(seed)
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if name == "gate.weight" else 0.1))
    return block


def block_weights(block):
    s = block.shared_expert
    return dict(router_w=block.gate.weight.detach(), w13=block.experts.gate_up_proj.detach(),
                w2=block.experts.down_proj.detach(),
                shared_w13=torch.cat([s.gate_proj.weight, s.up_proj.weight]).detach(),
                shared_w2=s.down_proj.weight.detach(), shared_gate_w=block.shared_expert_gate.weight.detach())


@pytest.mark.parametrize("N", [1, 3, 64, 257])
def test_moe_block_matches_hf(N):
    block = hf_block(seed=N)
    x = torch.randn(N, 64, generator=gen(N + 1))
    with torch.no_grad():
        ref = block(x[None])[0]
    out = ops.moe_block(x, **block_weights(block), top_k=3)
    assert (out - ref).abs().max() <= 1e-6


def test_routing_matches_hf_router_and_breaks_ties_to_lower_id():
    block = hf_block(E=16, k=4)
    x = torch.randn(50, 64, generator=gen(5))
    logits, ref_w, ref_ids = block.gate(x)
    w, ids = ops.moe_route(logits.detach(), 4)
    assert ids.dtype == torch.int32 and w.dtype == torch.float32
    assert torch.equal(ids.long(), ref_ids) and (w - ref_w).abs().max() <= 1e-6
    assert (w.sum(-1) - 1).abs().max() <= 1e-6
    tied = torch.tensor([[0.0, 1.0, 1.0, 0.5, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]])
    w, ids = ops.moe_route(tied, 3)
    assert ids.tolist() == [[1, 2, 4], [0, 1, 2]]
    assert torch.allclose(w, torch.full((2, 3), 1 / 3))


def test_fused_moe_expert_parallel_subsets_sum_to_full():
    block = hf_block(E=8, k=2)
    wts = block_weights(block)
    x = torch.randn(40, 64, generator=gen(7))
    weights, ids = ops.moe_route(x @ wts["router_w"].t(), 2)
    full = ops.fused_moe(x, wts["w13"], wts["w2"], weights, ids)
    parts = [ops.fused_moe(x, wts["w13"][a:b], wts["w2"][a:b], weights, ids, expert_offset=a, num_experts=8)
             for a, b in ((0, 3), (3, 8))]
    assert (parts[0] + parts[1] - full).abs().max() <= 1e-6
    only_one = ops.fused_moe(x, wts["w13"][5:6], wts["w2"][5:6], weights, ids, expert_offset=5, num_experts=8)
    untouched = ~(ids == 5).any(-1)
    assert not only_one[untouched].any() and only_one[~untouched].abs().sum() > 0
    ep = [ops.moe_block(x, **{**wts, "w13": wts["w13"][a:b], "w2": wts["w2"][a:b]}, top_k=2, expert_offset=a)
          for a, b in ((0, 4), (4, 8))]
    shared_twice = ops.moe_block(x, **{**wts, "w13": wts["w13"][:0], "w2": wts["w2"][:0]}, top_k=2)
    assert (ep[0] + ep[1] - shared_twice - ops.moe_block(x, **wts, top_k=2)).abs().max() <= 1e-5


def test_all_tokens_on_one_expert_and_unused_experts():
    block = hf_block(E=8, k=1)
    wts = block_weights(block)
    x = torch.randn(9, 64, generator=gen(8))
    ids = torch.full((9, 1), 6, dtype=torch.int32)
    out = ops.fused_moe(x, wts["w13"], wts["w2"], torch.ones(9, 1), ids)
    with torch.no_grad():
        ref = block.experts(x, ids.long(), torch.ones(9, 1))
    assert (out - ref).abs().max() <= 1e-6


def test_swiglu_mlp_matches_hf():
    cfg = transformers.Qwen3_5MoeTextConfig(hidden_size=64, num_hidden_layers=1)
    mlp = M.Qwen3_5MoeMLP(cfg, intermediate_size=40)
    x = torch.randn(7, 64, generator=gen(9))
    w13 = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach()
    with torch.no_grad():
        assert (ops.swiglu_mlp(x, w13, mlp.down_proj.weight.detach()) - mlp(x)).abs().max() <= 1e-6


def test_moe_ops_reject_bad_inputs():
    wts = block_weights(hf_block())
    x = torch.randn(4, 64)
    weights, ids = ops.moe_route(x @ wts["router_w"].t(), 3)
    with pytest.raises(ValueError, match=r"topk_ids must be in \[0, num_experts=8\)"):
        ops.fused_moe(x, wts["w13"], wts["w2"], weights, ids + 8)
    with pytest.raises(TypeError, match="topk_weights must have dtype float32"):
        ops.fused_moe(x, wts["w13"], wts["w2"], weights.double(), ids)
    with pytest.raises(ValueError, match=r"w2 must have shape \[E, H, I\]"):
        ops.fused_moe(x, wts["w13"], wts["w2"][:, :, :5], weights, ids)
    with pytest.raises(ValueError, match="top_k must be an int"):
        ops.moe_route(x @ wts["router_w"].t(), 9)
    with pytest.raises(ValueError, match="must be given together"):
        ops.moe_block(x, **{**wts, "shared_w2": None}, top_k=3)
    with pytest.raises(ValueError, match="router_w rows"):
        ops.moe_block(x, **wts, top_k=3, expert_offset=4)
    odd = {**wts, "w13": wts["w13"][:, :60], "w2": wts["w2"][:, :, :30].contiguous()}  # I = 30: not 16-byte rows
    with pytest.raises(ValueError, match="backend='kernel' does not support this input: the expert kernels need H"):
        ops.moe_block(x, **odd, top_k=3, backend="kernel")
