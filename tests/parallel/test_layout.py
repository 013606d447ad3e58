"""Tensor-parallel layout without collectives (in this process): which counts a tensor-parallel size must divide
(errors raised before any worker starts), the placement rewriting of the sharded loader, the bytes each rank reads
from the checkpoint (instrumented reader: only its own slices, for both expert layouts and both MoE modes), and the
per-rank memory table (matches the parameters a rank actually allocates; the README table is its output).
Code: python/qwen35_native/parallel/layout.py, shard.py, loading.py, memory.py."""

import dataclasses
import os
import pathlib
import time

import pytest
import torch
from tp_helpers import write_case

import qwen35_native as q35
from qwen35_native import configs
from qwen35_native.parallel import TPContext, check_tensor_parallel, load_sharded, param_specs, take_shard
from qwen35_native.parallel.layout import ShardSpec
from qwen35_native.parallel.memory import memory_table, rank_memory
from qwen35_native.parallel.shard import shard_placement
from qwen35_native.weights import CheckpointReader, Placement

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def case_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tp_layout")
    return {name: write_case(str(root / name), name) for name in ("moe4", "moe4-kvrep", "dense4")}


# --- which sizes are allowed ----------------------------------------------------------------------------------
def test_non_dividing_sizes_name_what_does_not_divide():
    tiny = configs.get("tiny-moe").text       # 4 q / 1 kv heads, GDN 2 k heads, 8 experts, I 32, shared 48
    check_tensor_parallel(tiny, 2)
    with pytest.raises(ValueError, match=r"tensor_parallel_size=4 does not divide linear_num_key_heads=2") as e:
        check_tensor_parallel(tiny, 4)
    assert "num_attention_heads" not in str(e.value)
    with pytest.raises(ValueError) as e:
        check_tensor_parallel(tiny, 3)
    for what in ("num_attention_heads=4", "linear_num_key_heads=2", "moe_intermediate_size=32"):
        assert what in str(e.value)
    six = dataclasses.replace(tiny, num_experts=6, linear_num_key_heads=4, linear_num_value_heads=8)
    check_tensor_parallel(six, 4, "tp")
    with pytest.raises(ValueError, match=r"num_experts=6 \(moe_parallel='ep'"):
        check_tensor_parallel(six, 4, "ep")
    kv3 = dataclasses.replace(tiny, num_attention_heads=12, num_key_value_heads=3)
    with pytest.raises(ValueError, match=r"num_key_value_heads=3 \(kv heads are split"):
        check_tensor_parallel(kv3, 2)
    with pytest.raises(ValueError, match=r"num_key_value_heads=3 \(kv heads are replicated"):
        check_tensor_parallel(kv3, 4)
    dense = configs.get("tiny-dense").text
    with pytest.raises(ValueError, match=r"intermediate_size=96 \(dense MLP\)"):
        check_tensor_parallel(dense, 64)
    for name in ("397b-a17b", "122b-a10b", "35b-a3b", "27b", "9b", "0.8b"):
        for mode in ("tp", "ep"):
            check_tensor_parallel(configs.get(name).text, 8, mode)   # every released size runs on 8 GPUs


def _children() -> set[int]:
    out = set()
    for task in pathlib.Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            text = (task / "children").read_text().split()
        except FileNotFoundError:   # the thread ended since the listing (CI saw it once): it has no children now
            continue
        out.update(int(p) for p in text)
    return out


def test_llm_rejects_bad_tensor_parallel_arguments_before_starting_workers(tmp_path):
    from qwen35_native.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(str(tmp_path / "tiny"), "tiny-moe")
    before, start = _children(), time.monotonic()
    with pytest.raises(ValueError, match="tensor_parallel_size=4 does not divide linear_num_key_heads=2"):
        q35.LLM(path, tensor_parallel_size=4, device="cpu")
    with pytest.raises(ValueError, match="moe_parallel must be 'tp' or 'ep'"):
        q35.LLM(path, tensor_parallel_size=2, moe_parallel="dp")
    with pytest.raises(ValueError, match="tensor_parallel_size must be a positive integer"):
        q35.LLM(path, tensor_parallel_size=0)
    with pytest.raises(ValueError, match="needs a checkpoint directory"):
        q35.LLM(q35.from_pretrained(path, backend="reference"), tensor_parallel_size=2)
    assert _children() == before and time.monotonic() - start < 30   # nothing was started


# --- placements ---------------------------------------------------------------------------------------------------
def test_placements_are_cut_to_the_ranks_ranges():
    conv = Placement("conv1d.weight", (12, 1, 4))                         # [C, 1, W] read into a [C, W] parameter
    spec = ShardSpec(0, ((2, 4), (8, 10)), 4)
    assert shard_placement(conv, (12, 4), spec) == [
        Placement("conv1d.weight", (12, 1, 4), (slice(2, 4), slice(None), slice(None)), (slice(0, 2), slice(None))),
        Placement("conv1d.weight", (12, 1, 4), (slice(8, 10), slice(None), slice(None)), (slice(2, 4), slice(None)))]
    up = Placement("experts.3.up_proj.weight", (6, 5), dst=(3, slice(6, 12)))   # rows [6, 12) of w13 [E, 12, 5]
    tp = ShardSpec(1, ((2, 4), (8, 10)), 4)                                    # gate rows 2:4, up rows 8:10
    assert shard_placement(up, (8, 12, 5), tp) == [
        Placement("experts.3.up_proj.weight", (6, 5), (slice(2, 4), slice(None)), (3, slice(2, 4), slice(None)))]
    ep = ShardSpec(0, ((4, 8),), 4)
    assert shard_placement(up, (8, 12, 5), ep) == []
    other = Placement("experts.5.down_proj.weight", (5, 6), dst=(5,))
    assert shard_placement(other, (8, 5, 6), ep) == [
        Placement("experts.5.down_proj.weight", (5, 6), (), (1, slice(None), slice(None)))]
    cols = Placement("o_proj.weight", (5, 16))
    assert shard_placement(cols, (5, 16), ShardSpec(1, ((8, 12),), 4)) == [
        Placement("o_proj.weight", (5, 16), (slice(None), slice(8, 12)), (slice(None), slice(0, 4)))]


# --- sharded loading reads only the rank's bytes ---------------------------------------------------------------
@pytest.mark.parametrize("name,mode", [("moe4", "tp"), ("moe4", "ep"), ("moe4-kvrep", "tp"), ("moe4-kvrep", "ep"),
                                       ("dense4", "tp")])
def test_each_rank_reads_only_its_slices(case_dirs, monkeypatch, name, mode):
    torch.set_num_threads(1)
    path, world = case_dirs[name], 4
    full = q35.from_pretrained(path, backend="reference")
    full_params = dict(full.named_parameters())
    reader = CheckpointReader(path)
    sizes = {k: reader.shape(k) for k in reader.key_file}
    whole = {k: torch.Size(s).numel() * 4 for k, s in sizes.items()}       # fp32 checkpoint
    reads: list[tuple[str, tuple, int]] = []
    original = CheckpointReader.read

    def counting_read(self, key, index=()):
        t = original(self, key, index)
        reads.append((key, index, t.numel() * t.element_size()))
        return t

    monkeypatch.setattr(CheckpointReader, "read", counting_read)
    per_key = [dict() for _ in range(world)]
    for rank in range(world):
        reads.clear()
        model = load_sharded(path, TPContext(rank, world, CPU), backend="reference", moe_parallel=mode)
        specs, _ = param_specs(full, rank, world, mode)
        held = 0
        for pname, p in model.named_parameters():
            want = take_shard(full_params[pname], specs[pname]) if pname in specs else full_params[pname]
            assert torch.equal(p, want), f"rank {rank}: {pname} is not its shard"
            held += (specs[pname].filled * p.numel() // specs[pname].size if pname in specs else p.numel()) * 4
        assert sum(n for _, _, n in reads) == held     # every byte read is a byte the rank holds (no padding)
        for key, _, n in reads:
            per_key[rank][key] = per_key[rank].get(key, 0) + n
        sharded_keys = {k for k, index, _ in reads if index}
        assert sharded_keys, "nothing was read by slice"
        for key in sharded_keys:
            assert per_key[rank][key] < whole[key], f"rank {rank} read all of {key}"
    parts = ("in_proj_qkv", "in_proj_z", "out_proj", "q_proj", "o_proj", "experts", "embed_tokens", "lm_head",
             "down_proj")
    split = [k for k in whole if not k.startswith("mtp.") and any(s in k for s in parts)]
    assert split
    for key in split:   # tensors split (not replicated) across the ranks are read exactly once in total
        assert sum(r.get(key, 0) for r in per_key) == whole[key], key


# --- memory -------------------------------------------------------------------------------------------------------
def test_rank_memory_is_what_a_rank_allocates(case_dirs):
    path = case_dirs["moe4"]
    config = q35.model.Qwen35Config.from_file(path)
    for world, mode in ((1, "tp"), (2, "ep"), (4, "tp")):
        model = load_sharded(path, TPContext(world - 1, world, CPU), backend="reference", moe_parallel=mode)
        held = sum(p.numel() * p.element_size() for p in model.parameters())
        m = rank_memory(config, world, mode, dtype=torch.float32)
        assert m.weights == held
        cache = model.allocate_cache(num_blocks=3, block_size=5, num_slots=2)
        kv = sum(t.numel() * t.element_size() for pair in cache.kv.values() for t in pair)
        state = sum(t.numel() * t.element_size() for t in list(cache.conv.values()) + list(cache.ssm.values()))
        assert (kv, state) == (15 * m.kv_per_token, 2 * m.state_per_seq)


def test_release_numbers_and_the_readme_table():
    big = configs.get("397b-a17b")
    one, eight = rank_memory(big, 1), rank_memory(big, 8)
    assert 390e9 < one.weights / 2 < 405e9                         # ~397B bf16 parameters (with the vision tower)
    assert one.weights / 8 < eight.weights < one.weights / 8 * 1.02   # replicated parts are small
    assert one.kv_per_token == 15 * 2 * 2 * 256 * 2                   # 15 layers, 2 kv heads, K and V, bf16
    assert eight.kv_per_token == 15 * 1 * 2 * 256 * 2                 # 1 kv head per rank (replicated)
    assert one.state_per_seq == 45 * (12288 * 3 * 2 + 64 * 128 * 128 * 4)
    assert eight.state_per_seq == one.state_per_seq // 8
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    assert memory_table() in readme.read_text(), "README's table must be `python -m qwen35_native.parallel.memory`"


def test_a_worker_that_dies_at_start_up_is_a_clear_error(tmp_path, monkeypatch):
    """The worker command is replaced by one that exits at once (a crash before it joins): rank 0 says which rank
    died and when, instead of waiting for it to join."""
    import sys

    from qwen35_native.parallel import RankFailure
    from qwen35_native.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(str(tmp_path / "tiny"), "tiny-moe")
    monkeypatch.setattr(sys, "executable", "/bin/false")
    before, start = _children(), time.monotonic()
    with pytest.raises(RankFailure, match=r"worker rank 1 \(pid \d+\) exited with code 1 before it was joining"):
        q35.LLM(path, tensor_parallel_size=2, device="cpu")
    assert time.monotonic() - start < 30 and _children() == before
