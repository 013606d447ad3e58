"""Speculative decoding at the model level: a verification step (``decode_width`` w > 1: each sequence feeds its
pending token and w - 1 drafts through the decode ops) against w ordinary decode steps, the scratch GDN slots it
fills for a roll-back, and the MTP head's forward against its definition computed in float64."""

import pytest
import torch
from model_helpers import max_abs, random_ids

import qwen35_native as q35
from qwen35_native.model import ForwardBatch
from qwen35_native.ops.norm import rms_norm_reference
from qwen35_native.tiny import write_tiny_checkpoint

BLOCK = 8


@pytest.fixture(scope="module")
def mtp_models(tmp_path_factory):
    """backend -> (model with its MTP head, vocab of token ids to draw from)."""
    root = tmp_path_factory.mktemp("spec")
    moe = write_tiny_checkpoint(str(root / "moe"), "tiny-moe", seed=3)
    kernel = write_tiny_checkpoint(str(root / "kernel"), "tiny-kernel", seed=4)
    return {"reference": q35.from_pretrained(moe, backend="reference", load_mtp=True),
            "kernel": q35.from_pretrained(kernel, backend="kernel", load_mtp=True)}


def _tables(lens, width):
    """Disjoint block tables (shuffled block ids) for sequences of these final lengths."""
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(7))
    table, start = torch.zeros(len(lens), width, dtype=torch.int32), 0
    for i, n in enumerate(lens):
        need = -(-n // BLOCK)
        table[i, :need] = perm[start:start + need]
        start += need
    return table


def _batch(query, context, slots, table, cache, **kw):
    return ForwardBatch.build(query, context, slots, table, BLOCK, "cpu", logits="all", num_slots=cache.num_slots,
                              num_blocks=cache.num_blocks, **kw)


def _prefilled(model, prompts, slots, table):
    cache = model.allocate_cache(num_blocks=64, block_size=BLOCK, num_slots=8, with_mtp=True)
    for t in [*cache.conv.values(), *cache.ssm.values()]:
        t.fill_(float("nan"))  # scratch and unused slots must never be read
    batch = _batch([len(p) for p in prompts], [0] * len(prompts), slots, table, cache)
    model.forward_cached(torch.cat(prompts), batch, cache)
    return cache


def _clone(cache):
    c = model_cache = type(cache)(**{k: v for k, v in vars(cache).items()})
    c.kv = {i: (k.clone(), v.clone()) for i, (k, v) in model_cache.kv.items()}
    c.conv = {i: t.clone() for i, t in cache.conv.items()}
    c.ssm = {i: t.clone() for i, t in cache.ssm.items()}
    return c


@pytest.mark.parametrize("backend", ["reference", "kernel"])
@pytest.mark.parametrize("width", [2, 3])
def test_verify_step_matches_sequential_decode_steps(mtp_models, backend, width):
    model = mtp_models[backend]
    vocab = 448
    prompts = [random_ids(n, vocab, seed=n) for n in (5, 11)]
    slots, scratch = [4, 1], [[0, 6, 7][:width - 1], [5, 2, 3][:width - 1]]
    fed = [random_ids(width, vocab, seed=20 + i) for i in range(2)]   # pending token + drafts, per sequence
    table = _tables([16, 24], 3)
    cache = _prefilled(model, prompts, slots, table)
    seq_cache = _clone(cache)
    ctx = [len(p) for p in prompts]
    # one verification step: both sequences' w tokens through the decode ops, states after j < w - 1 to scratch
    batch = _batch([width] * 2, ctx, slots, table, cache, decode_width=width, spec_scratch=scratch)
    assert batch.num_decodes == 2 and batch.num_decode_tokens == 2 * width
    got = model.forward_cached(torch.cat(fed), batch, cache).view(2, width, -1)
    # the same tokens as w ordinary decode steps
    for j in range(width):
        step = _batch([1, 1], [c + j for c in ctx], slots, table, seq_cache)
        want = model.forward_cached(torch.stack([f[j] for f in fed]), step, seq_cache)
        assert max_abs(got[:, j], want) <= 1e-5, f"position {j}"
        for layer in cache.conv:  # the state after position j is in scratch slot j of each sequence
            for s, rows in enumerate(scratch):
                if j < width - 1:
                    torch.testing.assert_close(cache.ssm[layer][rows[j]], seq_cache.ssm[layer][slots[s]],
                                               rtol=0, atol=1e-6)
                    # the conv state holds in_proj rows: a GEMM over 2w rows instead of 2 may round differently
                    torch.testing.assert_close(cache.conv[layer][rows[j]], seq_cache.conv[layer][slots[s]],
                                               rtol=0, atol=1e-5)
    for layer in cache.conv:  # and the sequence's own slot ends after the last position
        for s in slots:
            torch.testing.assert_close(cache.ssm[layer][s], seq_cache.ssm[layer][s], rtol=0, atol=1e-6)
    # rolling sequence 0 back to the state after its first token is a slot copy
    cache.copy_gdn_states(torch.tensor([scratch[0][0]]), torch.tensor([slots[0]]))
    layer = next(iter(cache.ssm))
    assert torch.equal(cache.ssm[layer][slots[0]], cache.ssm[layer][scratch[0][0]])


def test_verify_step_mixed_with_a_prefill_chunk(mtp_models):
    """Verifying sequences come first; a prefill chunk after them runs the prefill ops as before."""
    model = mtp_models["reference"]
    prompts = [random_ids(n, 448, seed=n) for n in (6, 9)]
    table = _tables([12, 24], 3)
    cache = _prefilled(model, prompts, [0, 1], table)
    ref = _clone(cache)
    fed, chunk = random_ids(2, 448, seed=1), random_ids(2, 448, seed=2)   # a chunk as wide as a verification
    batch = _batch([2, 2], [6, 9], [0, 1], table, cache, decode_width=2, spec_scratch=[[3]])
    assert batch.num_decodes == 1
    got = model.forward_cached(torch.cat([fed, chunk]), batch, cache)
    want = model.forward_cached(torch.cat([fed, chunk]), _batch([2, 2], [6, 9], [0, 1], table, ref), ref)
    assert max_abs(got, want) <= 1e-5


def test_verify_batch_errors(mtp_models):
    cache = mtp_models["reference"].allocate_cache(num_blocks=8, block_size=BLOCK, num_slots=4)
    table = torch.tensor([[0], [1]], dtype=torch.int32)
    with pytest.raises(ValueError, match="spec_scratch must hold decode_width - 1 = 1"):
        _batch([2, 2], [3, 3], [0, 1], table, cache, decode_width=2, spec_scratch=[[2, 3]])
    with pytest.raises(ValueError, match="must lead, each with query_len decode_width=2 and a context"):
        _batch([2, 3], [3, 3], [0, 1], table, cache, decode_width=2, spec_scratch=[[2], [3]])
    with pytest.raises(ValueError, match="unused by the sequences"):
        _batch([2, 2], [3, 3], [0, 1], table, cache, decode_width=2, spec_scratch=[[2], [1]])
    with pytest.raises(ValueError, match="only for decode_width > 1"):
        _batch([1], [3], [0], table[:1], cache, spec_scratch=[[2]])
    with pytest.raises(ValueError, match="MTP KV caches"):
        mtp_models["reference"].forward_mtp(torch.zeros(1, dtype=torch.long), torch.zeros(1, 64),
                                            _batch([1], [0], [0], table[:1], cache), cache)


def _mtp_float64(model, next_ids, hidden):
    """MODEL_SPEC §3h for one sequence from position 0: fc([norm_e(embed), norm_h(hidden)]) (embedding first) in
    float64, the MTP decoder layer over the rows at positions 0, 1, ... (fp32: the ops take no float64; the layer
    itself is the model's, tested against transformers), then mtp.norm of its output plus its residual in
    float64."""
    mtp, cfg = model.mtp, model.text_config
    e = rms_norm_reference(model.embed_tokens[next_ids].double(), mtp.pre_fc_norm_embedding.double(),
                           cfg.rms_norm_eps)
    h = rms_norm_reference(hidden.double(), mtp.pre_fc_norm_hidden.double(), cfg.rms_norm_eps)
    x = torch.cat([e, h], -1) @ mtp.fc.double().T
    kv = tuple(torch.empty(4, BLOCK, cfg.num_key_value_heads, cfg.head_dim) for _ in "kv")
    batch = ForwardBatch.build([len(next_ids)], [0], [0], torch.arange(4, dtype=torch.int32)[None], BLOCK, "cpu",
                               logits="all")
    out, residual = mtp.layers[0](x.float(), None, batch, kv)
    y, _ = rms_norm_reference(out.double(), mtp.norm.double(), cfg.rms_norm_eps, residual=residual.double())
    return y


def test_mtp_forward_matches_its_definition(mtp_models):
    """Row t at position t pairs hidden[t] with the embedding of the token at t + 1; the head's KV cache carries
    across steps (prefill in two chunks then a decode row equals one pass over the whole sequence)."""
    model = mtp_models["reference"]
    ids = random_ids(13, 448, seed=5)
    table = _tables([16], 2)
    cache = model.allocate_cache(num_blocks=64, block_size=BLOCK, num_slots=2, with_mtp=True)
    batch = _batch([12], [0], [0], table, cache)
    _, hidden = model.forward_cached(ids[:12], batch, cache, return_hidden=True)
    want = _mtp_float64(model, ids[1:13], hidden)
    got = model.forward_mtp(ids[1:13], hidden, batch, cache)
    assert max_abs(got, want) <= 1e-4
    chunks = model.allocate_cache(num_blocks=64, block_size=BLOCK, num_slots=2, with_mtp=True)
    parts = []
    for lo, hi in ((0, 7), (7, 11), (11, 12)):
        b = _batch([hi - lo], [lo], [0], table, chunks)
        parts.append(model.forward_mtp(ids[lo + 1:hi + 1], hidden[lo:hi], b, chunks))
    assert max_abs(torch.cat(parts), got) <= 1e-5
