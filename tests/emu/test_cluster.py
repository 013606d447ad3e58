"""Thread block clusters on the emulator (q35::launch_cluster, q35/ptx/cluster.cuh; csrc/emu/cluster.cpp) and, with
-m gpu, the same kernels on an H100/H200: cluster ids, distributed shared memory through map_shared_rank,
cluster-scope mbarrier arrivals, the cluster barrier, and TMA multicast. The blocks of a cluster run together,
each until none of its threads can go on before the next one runs, so a missing cluster barrier shows: a read of a
peer's shared memory before the peer wrote it sees the poison, a signal or multicast to a peer that has not
initialised its mbarrier is an error, a thread that never arrives at the cluster barrier a reported deadlock.
Kernels: tests/emu/kernels/cluster_test_kernels.cu."""

from __future__ import annotations

import pytest
import torch

from qwen35_native import emulator
from utils import run_under_schedules

OK, NO_SYNC_BEFORE_READ, NO_SYNC_AFTER_INIT, RANK_OUT_OF_RANGE, SKIP_ARRIVE, EXIT_BEFORE_READ = range(6)
MULTICAST_OK, MULTICAST_SELF_ONLY, MULTICAST_NO_SYNC_AFTER_INIT = range(3)
SCHEDULES = ("forward", "reverse", "random:11")


def expected_probe(blocks: int, cluster: int, threads: int):
    b = torch.arange(blocks)
    rank = b % cluster
    ids = torch.stack([b, rank, torch.full_like(b, cluster), rank], dim=1).to(torch.int32)
    right = (b // cluster) * cluster + (rank + 1) % cluster
    peer = (1000 * right[:, None] + torch.arange(threads)[None, :]).to(torch.int32)
    return ids, peer


def probe(emu_ops, blocks, cluster, threads, variant=OK, device="cpu"):
    ids, peer = emu_ops.cluster_probe(torch.empty(1, device=device), blocks, cluster, threads, variant)
    return ids.cpu(), peer.cpu()


def require_sm90_gpu():
    if not (torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)):
        pytest.skip("needs an sm_90 GPU (H100/H200)")


@pytest.mark.parametrize(("blocks", "cluster", "threads"), [(3, 1, 32), (4, 2, 64), (8, 4, 96), (16, 8, 32)])
def test_ids_shared_memory_and_arrivals_across_the_cluster(emu_ops, blocks, cluster, threads):
    """Each block reads its right neighbour's shared array after a cluster barrier and signals every other
    block's mbarrier; under three thread (and block) orders the results are exact and identical."""
    ids, peer = run_under_schedules(probe, emu_ops, blocks, cluster, threads, schedules=SCHEDULES)
    want_ids, want_peer = expected_probe(blocks, cluster, threads)
    assert torch.equal(ids, want_ids)
    assert torch.equal(peer, want_peer)


def test_reading_a_peer_before_the_cluster_barrier_sees_poison(emu_ops):
    for order in SCHEDULES[:2]:
        with emulator.schedule(order):
            _, peer = probe(emu_ops, 4, 2, 32, NO_SYNC_BEFORE_READ)
        bad = peer != expected_probe(4, 2, 32)[1]
        assert bad.any() and (peer[bad] == -1).all(), f"{order}: a racing read must see the 0xFF poison"


def test_signalling_a_peer_before_it_initialised_its_mbarrier_is_an_error(emu_ops):
    with pytest.raises(RuntimeError, match=r"mbarrier.arrive.shared::cluster on the mbarrier of cluster rank \d+ "
                                           r".* which that block has not initialised \(yet: a cluster barrier"):
        probe(emu_ops, 2, 2, 32, NO_SYNC_AFTER_INIT)


def test_rank_outside_the_cluster_is_an_error(emu_ops):
    with pytest.raises(RuntimeError, match=r"mapa \(map_shared_rank\): CTA rank 2 is outside this cluster of 2 "
                                           r"block\(s\)"):
        probe(emu_ops, 2, 2, 32, RANK_OUT_OF_RANGE)


def test_mapping_the_shared_memory_of_a_block_that_exited_is_an_error(emu_ops):
    """Rank 0 leaves once the arrays are written (no cluster barrier after its neighbour's read): in the forward
    order it runs to its exit before rank 1 reads it, and rank 1's mapa of it is an error (on a GPU its shared memory
    may already be another block's). Other orders end in the deadlock of rank 1's last cluster barrier instead."""
    with emulator.schedule("forward"), pytest.raises(
            RuntimeError, match=r"mapa \(map_shared_rank\): block rank 0 of the cluster has exited, its shared memory "
                                r"with it \(a cluster barrier before its exit"):
        probe(emu_ops, 2, 2, 32, EXIT_BEFORE_READ)


def test_a_block_that_never_reaches_the_cluster_barrier_is_a_deadlock(emu_ops):
    with pytest.raises(RuntimeError) as err:
        probe(emu_ops, 4, 2, 32, SKIP_ARRIVE)
    msg = str(err.value)
    assert "deadlock: no thread of the cluster can proceed" in msg
    assert "block of cluster rank 1:" in msg and "wait at barrier.cluster.wait" in msg
    assert "32 of 64 threads of the cluster arrived at barrier.cluster" in msg


@pytest.mark.parametrize(("blocks", "cluster", "why"), [
    (3, 2, r"grid \(3, 1, 1\) is not a multiple of the cluster \(2, 1, 1\)"),
    (16, 16, r"cluster \(16, 1, 1\) has 16 blocks; at most 8"),
])
def test_invalid_cluster_launches(emu_ops, blocks, cluster, why):
    with pytest.raises(RuntimeError, match="invalid launch for sm_90: " + why):
        probe(emu_ops, blocks, cluster, 32)


def multicast(emu_ops, cluster, clusters, rows, variant=MULTICAST_OK, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-30000, 30000, (clusters * cluster * rows, 64), generator=g, dtype=torch.int16)
    out = emu_ops.cluster_tma_probe(x.to(device), cluster, rows, variant).cpu()
    want = x.view(clusters, cluster * rows, 64).repeat_interleave(cluster, dim=0)
    return out, want


@pytest.mark.parametrize(("cluster", "clusters", "rows"), [(2, 2, 8), (4, 1, 64), (8, 1, 16)])
def test_tma_multicast_lands_in_every_block_of_the_mask(emu_ops, cluster, clusters, rows):
    """Block r of a cluster loads box r and multicasts it to all: every block holds all boxes of its cluster."""
    out, want = run_under_schedules(lambda: multicast(emu_ops, cluster, clusters, rows), schedules=SCHEDULES)
    assert torch.equal(out, want)


def test_multicast_errors(emu_ops):
    with pytest.raises(RuntimeError, match=r"deadlock: no thread of the cluster can proceed(.|\n)*tx-count"):
        multicast(emu_ops, 2, 1, 8, MULTICAST_SELF_ONLY)   # the other block's bytes never come
    with pytest.raises(RuntimeError, match=r"TMA load multicast\) on the mbarrier of cluster rank \d .* not "
                                           r"initialised"):
        multicast(emu_ops, 2, 1, 8, MULTICAST_NO_SYNC_AFTER_INIT)


# ---- the same kernels on an sm_90 GPU: what the emulator assumes of clusters, checked on the hardware ----

@pytest.mark.gpu
@pytest.mark.parametrize(("blocks", "cluster", "threads"), [(264, 2, 64), (264, 4, 128), (128, 8, 32)])
def test_gpu_cluster_probe(emu_ops, blocks, cluster, threads):
    require_sm90_gpu()
    ids, peer = probe(emu_ops, blocks, cluster, threads, device="cuda")
    want_ids, want_peer = expected_probe(blocks, cluster, threads)
    assert torch.equal(ids, want_ids)
    assert torch.equal(peer, want_peer)


@pytest.mark.gpu
@pytest.mark.parametrize(("cluster", "clusters", "rows"), [(2, 66, 8), (4, 33, 64), (8, 8, 16)])
def test_gpu_tma_multicast(emu_ops, cluster, clusters, rows):
    require_sm90_gpu()
    out, want = multicast(emu_ops, cluster, clusters, rows, device="cuda")
    assert torch.equal(out, want)
