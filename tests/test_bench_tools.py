"""bench/_compare_paths.py: ranks our paths per (op, shape) in a results file and says where the automatic choice
would have to change when a variant beats it."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _row(op, shape, impl, us):
    return {"bench": "x", "op": op, "shape": shape, "dtype": "bf16", "impl": impl, "median_us": us}


def test_compare_paths_ranks_and_points_at_the_switch(tmp_path):
    rows = [_row("gdn_chunk_prefill", "397b-tp8 1x32768", "q35-sm90a", 300.0),
            _row("gdn_chunk_prefill", "397b-tp8 1x32768", "q35-sm90a-prepass", 600.0),   # auto
            _row("gdn_chunk_prefill", "397b-tp8 1x32768", "fla", 2000.0),          # not ours: left out
            _row("paged_prefill_attention", "1x8192 4q/1kv", "q35 sm_90a V MN-major", 400.0),   # auto
            _row("paged_prefill_attention", "1x8192 4q/1kv", "q35 sm_90a ping-pong", 395.0),  # within 3 %
            _row("norm", "8192", "q35", 10.0),                                     # a single path: left out
            _row("fused_moe", "397b-tp8 N=8192", "q35 sm80 bm=64", 2000.0),
            _row("fused_moe", "397b-tp8 N=8192", "q35 sm90a bm=128", 2100.0),      # auto at I = 128: sm90a
            _row("fused_moe", "397b-tp8 N=8192", "q35 sm90a-sorted bm=128", 1000.0),
            _row("fused_moe", "397b-tp1 N=8192", "q35 sm80 bm=64", 900.0),
            _row("fused_moe", "397b-tp1 N=8192", "q35 sm90a bm=128", 1000.0),      # auto at I = 1024: sm90a
            _row("moe_down", "397b-tp1 N=8192", "q35 sm90a bm=128", 1000.0),
            _row("moe_down", "397b-tp1 N=8192", "q35 sm90a-pair-sorted bm=256", 600.0)]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "_compare_paths.py"), str(path)], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0].startswith("fused_moe | 397b-tp1 N=8192 | *q35 sm80 bm=64 900.0 us (1.11x)")
    assert out[1].startswith("  -> q35 sm80 bm=64 beats the automatic q35 sm90a bm=128 by 1.11x: ")
    assert "QWEN35_SM90A=0" in out[1]
    assert out[2].startswith("fused_moe | 397b-tp8 N=8192 | *q35 sm90a-sorted bm=128 1000.0 us (2.10x)")
    assert "moe_sorted_rows_auto" in out[3]
    assert out[4] == ("gdn_chunk_prefill | 397b-tp8 1x32768 | *q35-sm90a 300.0 us (2.00x) | "
                      " q35-sm90a-prepass 600.0 us (1.00x)")
    assert out[5].startswith("  -> q35-sm90a beats the automatic q35-sm90a-prepass by 2.00x: ")
    assert "QWEN35_GDN_PREPASS=0" in out[5]
    assert out[6].startswith("moe_down | 397b-tp1 N=8192 | *q35 sm90a-pair-sorted bm=256 600.0 us (1.67x)")
    assert "QWEN35_MOE_CLUSTER=1 QWEN35_MOE_SORTED_ROWS=1" in out[7]   # the longer prefix wins
    assert out[8].startswith("paged_prefill_attention | 1x8192 4q/1kv | *q35 sm_90a ping-pong 395.0 us (1.01x)")
    assert len(out) == 9, out  # no flip for a 1 % win, nothing for fla or single-path ops


def test_compare_paths_names_a_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"op": "x"}\nnot json\n')
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "_compare_paths.py"), str(path)], capture_output=True,
                         text=True)
    assert res.returncode != 0 and "bad.jsonl:2: not a JSON line" in res.stderr


def test_a_benchmark_stopped_by_a_time_limit_keeps_its_rows(tmp_path):
    """gpu_suite.sh runs each benchmark under `timeout` (SIGTERM): the rows measured before it are written, not
    lost with the process, and the exit status says it was stopped."""
    import signal

    script = tmp_path / "slow_bench.py"
    script.write_text(
        "import argparse, sys, time\n"
        f"sys.path.insert(0, {str(ROOT / 'bench')!r})\n"
        "from _report import Row, add_common_args, emit, emit_rows_made_on_term\n"
        "parser = argparse.ArgumentParser(); add_common_args(parser); args = parser.parse_args()\n"
        "emit_rows_made_on_term('slow', args)\n"
        "rows = [Row('op', f'shape {i}', 'bf16', 'q35', 10.0 + i) for i in range(2)]\n"
        "print('measured', flush=True)\n"
        "time.sleep(60)\n"
        "emit('slow', rows + [Row('op', 'never', 'bf16', 'q35', 1.0)], args)\n")
    out = tmp_path / "rows.jsonl"
    proc = subprocess.Popen([sys.executable, str(script), "--json", str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "measured"
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 124, stdout
    assert "stopped by a time limit after 2 rows" in stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["shape"] for r in rows] == ["shape 0", "shape 1"] and rows[0]["bench"] == "slow"


def test_decode_step_profile_lists_the_kernels_of_a_step():
    """bench/_profile_decode_step.py (run by gpu_suite's quick and profile stages): on the CPU (--dry-run) the
    operators of a tiny model's decode step, sorted by time per step, with their shares."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "_profile_decode_step.py"), "--dry-run", "--steps", "1",
                          "--top", "3"], capture_output=True, text=True, check=True, timeout=300).stdout.splitlines()
    assert out[0].startswith("== tiny-moe B1 ctx1024: 4 of 4 layers, eager, 1 steps"), out
    assert out[1].startswith("decode step: ") and "us of kernel time per step" in out[1], out
    rows = [line for line in out[3:] if line.strip()]
    assert len(rows) == 4 and rows[-1].endswith("more)"), out   # the top 3, then the rest
    shares = [float(line.split()[1].rstrip("%")) for line in rows]
    assert abs(sum(shares) - 100.0) < 0.5 and shares[0] >= shares[1] >= shares[2], out


def test_prefill_step_profile_says_its_wall_time_and_kernels():
    """--prefill N: one step prefilling an N-token prompt (capped at 32 on the CPU), its wall time beside the sum of
    its kernel (here: operator) times."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "_profile_decode_step.py"), "--dry-run", "--steps", "1",
                          "--top", "2", "--prefill", "1024"], capture_output=True, text=True, check=True,
                         timeout=300).stdout.splitlines()
    assert out[0].startswith("== tiny-moe prefill 1x32: 4 of 4 layers, eager, 1 steps; wall time "), out
    wall = float(out[0].split("wall time ")[1].split()[0])
    kernels = float(out[1].split("prefill step: ")[1].split()[0])
    assert kernels > 0 and wall > 0, out
    assert len([line for line in out[3:] if line.strip()]) == 3, out


def test_ncu_hotspots_reads_every_file_block_of_the_source_page():
    """ncu's source page comes in one block per file (the kernel's .cu and the headers it includes), each with its
    own "File Name" line and header; the hottest lines across all of them, and the uncoalesced ones, by file."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from _ncu_hotspots import format_hotspots, source_rows
    finally:
        sys.path.pop(0)
    cols = '"#","Source","Warp Stall Sampling (All Samples)","stall_long_sb","L2 Theoretical Sectors Global Excessive"'
    page = "\n".join(['"File Name","/x/gdn_chunk_prep.cu"', cols, '"10","a = load(p);","30","25","0"',
                      '"11","b = a * 2;","10","0","0"',
                      "ignored text line",
                      '"File Name","/x/gdn_prep_stage.cuh"', cols, '"7","s = k[lane * 9];","60","5","900"',
                      '"8","t = s;","0","0","100"'])
    rows = source_rows(page)
    assert [(r["File"], r["#"]) for r in rows] == [("/x/gdn_chunk_prep.cu", "10"), ("/x/gdn_chunk_prep.cu", "11"),
                                                   ("/x/gdn_prep_stage.cuh", "7"), ("/x/gdn_prep_stage.cuh", "8")]
    out = format_hotspots(rows, top=2)
    assert "60.0%" in out[0] and "gdn_prep_stage.cuh:7" in out[0] and "stall_long_sb 5" in out[0]
    assert "30.0%" in out[1] and "gdn_chunk_prep.cu:10" in out[1] and len(out) == 2 + 3
    assert out[2] == "  -- L2 Theoretical Sectors Global Excessive"
    assert "90.0%" in out[3] and "gdn_prep_stage.cuh:7" in out[3] and "10.0%" in out[4]
    assert format_hotspots([], top=3) == ["  (no source rows: was the kernel built with -lineinfo?)"]
