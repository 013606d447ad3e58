"""``qwen35 self-check`` (qwen35_native/self_check.py): every kernel family against its reference on this machine,
one line per case, exit status 1 when a case fails."""

import os
import subprocess
import sys

import pytest
import torch

from qwen35_native import self_check


def test_every_case_passes_on_the_cpu():
    lines = []
    assert self_check.run_self_check(["cpu"], print_fn=lines.append), "\n".join(lines)
    assert len(lines) == len(self_check.CASES)
    for name, line in zip(self_check.CASES, lines):
        assert line.startswith(f"{name} on cpu: relative error") and line.endswith("-> ok"), line


def test_a_wrong_or_crashing_kernel_is_reported(monkeypatch):
    def wrong(device, gen):
        ref = torch.randn(64, generator=gen)
        return ref + 0.1 * ref.abs().max(), ref

    def crashing(device, gen):
        raise RuntimeError("qwen35_native.some_op: boom")

    def nan(device, gen):
        return torch.full((4,), float("nan")), torch.ones(4)

    monkeypatch.setattr(self_check, "CASES", {"wrong": (wrong, 1e-2, False), "crashing": (crashing, 1e-2, False),
                                              "nan": (nan, 1e-2, False)})
    lines = []
    assert not self_check.run_self_check(["cpu"], print_fn=lines.append)
    assert lines[0].startswith("wrong on cpu: relative error") and lines[0].endswith("-> FAILED"), lines
    assert lines[1] == "crashing on cpu: FAILED (RuntimeError: qwen35_native.some_op: boom)", lines
    assert lines[2].endswith("-> FAILED"), lines


def test_cli_prints_the_build_and_exits_zero():
    out = subprocess.run([sys.executable, "-m", "qwen35_native.cli", "self-check"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("qwen35_native ") and "emulator built" in out.stdout
    assert out.stdout.count("-> ok") == len(self_check.CASES), out.stdout


def test_env_settings_are_restored(monkeypatch):
    """The Hopper path settings (QWEN35_SM90A, QWEN35_GDN_PREPASS) are set for one case and restored after it, set
    or unset as they were, even when the case raises."""
    monkeypatch.setenv("QWEN35_SM90A", "0")
    monkeypatch.delenv("QWEN35_GDN_PREPASS", raising=False)
    with self_check._env({"QWEN35_SM90A": "1", "QWEN35_GDN_PREPASS": "1"}):
        assert os.environ["QWEN35_SM90A"] == "1" and os.environ["QWEN35_GDN_PREPASS"] == "1"
    assert os.environ["QWEN35_SM90A"] == "0" and "QWEN35_GDN_PREPASS" not in os.environ
    with pytest.raises(RuntimeError, match="case failed"), self_check._env({"QWEN35_GDN_PREPASS": "1"}):
        raise RuntimeError("case failed")
    assert "QWEN35_GDN_PREPASS" not in os.environ


def test_extra_hopper_settings_name_cases_with_an_sm90a_path():
    """Each extra path setting (GDN pre-pass, MoE sorted rows) is keyed by a case that runs on an sm_90 GPU: a
    misspelt key would silently never run there."""
    for name, settings in self_check.EXTRA_HOPPER_SETTINGS.items():
        assert name in self_check.CASES and self_check.CASES[name][2], name
        assert settings and all("QWEN35_SM90A" in env for env, _ in settings), name
    assert {"chunk_gated_delta_rule", "fused_moe"} <= set(self_check.EXTRA_HOPPER_SETTINGS)
