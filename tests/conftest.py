"""Shared pytest configuration: the ``gpu`` marker (skipped without CUDA) and fixtures for kernel tests.

Fixtures:
    two_orders: ``two_orders(fn, *args, **kwargs)`` runs ``fn`` under the emulator's "forward" and "reverse"
        thread orders and asserts bit-identical outputs (a missing barrier shows up as a difference);
        returns the
        first output. See ``utils.run_under_schedules``.
    emu_ops: ``torch.ops.q35_emu_tests`` (the emulator's own test kernels, from ``qwen35_native._emu_tests``).
Measured figures noted with ``utils.record_measure`` are printed at the end of the run (also under pytest-xdist).
"""

from __future__ import annotations

import pytest
import torch

import utils


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _kv_caches_are_sized(monkeypatch):
    """An engine a test builds on CUDA names ``num_blocks``: the automatic size (90 % of the device's free memory)
    starves the other pytest-xdist workers, which then fail with out-of-memory errors of their own (an H200 run of
    2026-11-28 lost 13 tests to one unsized engine)."""
    from qwen35_native.engine import sizing

    def unsized(*args, **kwargs):
        raise AssertionError("a test built a CUDA engine without num_blocks=: size its KV cache (a few MB), the "
                             "automatic size takes 90 % of the GPU that the other test workers share")

    monkeypatch.setattr(sizing, "_cuda_blocks", unsized)


@pytest.fixture
def two_orders():
    return utils.run_under_schedules


@pytest.fixture(scope="session")
def emu_ops():
    import qwen35_native._emu_tests  # noqa: F401  (registers torch.ops.q35_emu_tests)

    return torch.ops.q35_emu_tests


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """GPU tests: notes each test's peak device memory when over 4 GiB (one H100 has 80; xdist workers share it)."""
    on_gpu = "gpu" in item.keywords and torch.cuda.is_available()
    if on_gpu:
        try:
            torch.cuda.reset_peak_memory_stats()
        except RuntimeError:  # a poisoned context: the test itself will report it
            on_gpu = False
    yield
    if not on_gpu:
        return
    try:
        peak = torch.cuda.max_memory_allocated() / 2**30
    except RuntimeError:  # a kernel fault poisoned the context: the test's own failure says so
        return
    if peak > 4:
        utils.record_measure("peak GPU memory of a test, GiB", item.nodeid, peak)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Moves the figures the test measured into its report (reports travel from xdist workers; modules do not)."""
    report = (yield).get_result()
    if utils.MEASURED:
        report.user_properties.extend(("measured", m) for m in utils.MEASURED)
        utils.MEASURED.clear()


def pytest_terminal_summary(terminalreporter):
    sections: dict[str, dict[str, float]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name == "measured":
                    section, key, v = value
                    keys = sections.setdefault(section, {})
                    keys[key] = max(v, keys.get(key, v))
    for section, keys in sorted(sections.items()):
        terminalreporter.write_sep("-", section)
        for key, v in sorted(keys.items()):
            terminalreporter.write_line(f"{v:.3g}  {key}")
