"""mbarrier phases on the emulator (and on an H100 with -m gpu): a fresh barrier's preceding phase counts as
complete (try_wait on parity 1 returns true), each phase completes when all `count` threads arrived and orders
their writes before the waiters' reads, phases alternate parity; a wait on the wrong parity returns early and is
caught by its stale reads."""

from __future__ import annotations

import pytest
import torch

from utils import run_under_schedules


def expected(rounds: int, threads: int) -> torch.Tensor:
    t = torch.arange(threads)
    rows = [torch.ones(threads, dtype=torch.int32)]
    rows += [(1000 * r + (t + 1) % threads).to(torch.int32) for r in range(rounds)]
    return torch.stack(rows)


def probe(emu_ops, rounds, threads, wrong_parity=False, device="cpu"):
    out = torch.full((rounds + 1, threads), -5, dtype=torch.int32, device=device)
    emu_ops.mbarrier_probe(out, wrong_parity)
    return out.cpu()


@pytest.mark.parametrize("threads", [32, 96, 256])
def test_phases_order_writes_before_reads(emu_ops, threads):
    out = run_under_schedules(probe, emu_ops, 5, threads, schedules=("forward", "reverse", "random:7"))
    assert torch.equal(out, expected(5, threads))


def test_wait_on_the_wrong_parity_is_caught(emu_ops):
    # Waiting on the other parity returns before the phase completes: stale reads, or arrivals of different
    # rounds mixed into one phase until no phase can complete (a deadlock naming the barrier).
    try:
        out = probe(emu_ops, 4, 64, wrong_parity=True)
    except RuntimeError as e:
        assert "deadlock" in str(e) and "mbarrier" in str(e), str(e)
        return
    assert not torch.equal(out, expected(4, 64))


@pytest.mark.gpu
def test_gpu_phases_match(emu_ops):
    assert torch.equal(probe(emu_ops, 6, 128, device="cuda"), expected(6, 128))
