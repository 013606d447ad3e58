// When an automatic path choice (no arch / impl / block_m given) takes an sm_90a kernel that can run here.
//
// Under the emulator: always, so that CI covers the sm_90a kernels through every op and the model.
// On a GPU, by the environment variable QWEN35_SM90A:
//   unset (default)  where the sm_90a kernel was measured faster than its sm_80 twin (`faster_here`: attention
//                    prefill and the GDN chunk scan everywhere; the MoE grouped GEMMs from an expert intermediate
//                    size of 128 per rank, moe_ops.cpp). All three passed their `pytest -m gpu` tests and the
//                    emulator-vs-hardware twins of their wgmma / TMA layouts on an H200 (2026-11-28,
//                    bench/results/2026-11-28-NVIDIA-H200.md).
//   "1"              wherever an sm_90a kernel can run (to test or time it where the default would not choose it).
//   "0"              never (the sm_80 kernels only).
// Explicit choices (arch / impl / block_m arguments) are not affected.
#pragma once
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace q35::glue {

// A 0 / 1 switch from the environment: -1 when unset (or empty), else 0 or 1; any other value is an error that
// names the variable and says what each value means (`meaning`, e.g. "0 (...), 1 (...) or unset (...)").
inline int env_switch(const char* name, const char* meaning) {
  const char* setting = std::getenv(name);
  if (setting == nullptr || *setting == '\0') return -1;
  TORCH_CHECK(std::strcmp(setting, "0") == 0 || std::strcmp(setting, "1") == 0, "qwen35_native: ", name,
              " must be ", meaning, ", got '", setting, "'");
  return setting[0] - '0';
}

inline bool sm90a_auto(bool on_cuda, bool faster_here = true) {
  const int setting = env_switch(
      "QWEN35_SM90A", "0 (never the sm_90a kernels), 1 (wherever they can run) or unset (where they are faster)");
  if (!on_cuda) return true;
  return setting < 0 ? faster_here : setting == 1;
}

// Whether an automatic choice that took the sm_90a GDN chunk scan runs it after the chunk-local pre-pass (the raw
// op's arch 91, csrc/kernels/gdn/gdn_chunk_prep.cu), by the environment variable QWEN35_GDN_PREPASS: "1" or unset
// yes; "0" no (the fused scan, arch 90). H200 (bench/results/2026-11-28-NVIDIA-H200-session8.md): the pre-pass
// path was 1.22x-1.34x the fused scan at 397b tp1 / tp8, 1x8192 / 1x32768, and 2.1x with weak decay.
inline bool gdn_prepass_auto() {
  return env_switch("QWEN35_GDN_PREPASS",
                    "0 (the fused sm_90a GDN scan), 1 (after the chunk-local pre-pass) or unset (1)") != 0;
}

// Whether the GDN decode kernel with the gated norm fused and a head split over several CTAs runs them as one
// thread block cluster on sm_90 (the row's sums of squares through distributed shared memory: no row counters to
// zero, no atomics, no rereading of the row) -- by the environment variable QWEN35_GDN_DECODE_CLUSTER: "1" or unset
// yes, "0" no (the row's last CTA normalises it, with counters zeroed per call). Not yet timed on a GPU: it removes a
// memset launch and two dependent global-memory round trips per layer and step (bench/gdn.py prints both).
inline bool gdn_decode_cluster_auto() {
  return env_switch("QWEN35_GDN_DECODE_CLUSTER",
                    "0 (the row's last CTA normalises it), 1 (the head's CTAs as one cluster) or unset (1)") != 0;
}

// Whether the gdn_decode layer op on sm_90 convolves the token's q | k | v inside the recurrent kernel (one thread
// block cluster per sequence and k head; no conv kernel, no conv output in global memory), where its shapes allow
// (gdn_decode_fuses_conv: 2 to 8 CTAs per head at most 8 per k head, 16-bit, conv width 4) -- by the environment
// variable QWEN35_GDN_DECODE_FUSED: "1" or unset yes, "0" no (the conv update kernel, then the recurrent one). Not
// yet timed on a GPU: one launch and the conv output's write and reread fewer per layer and step (bench/gdn.py).
inline bool gdn_decode_fused_auto() {
  return env_switch("QWEN35_GDN_DECODE_FUSED",
                    "0 (the conv update kernel first), 1 (the conv inside the recurrent kernel) or unset (1)") != 0;
}

// How many value heads of one k head a CTA of the GDN pre-pass takes (GdnChunkParams::prep_heads_per_cta), by the
// environment variable QWEN35_GDN_PREP_HEADS: a positive integer N -- the largest divisor of Hv / Hk (`per_k_head`)
// up to N; unset: 1. Its heads share one load and L2 norm of q and k; fewer CTAs, each longer. Not yet timed on a
// GPU (bench/gdn.py prints the pre-pass path at 1, 2 and 4 side by side), so the default stays the one-head CTA
// that was measured.
inline int gdn_prep_heads_per_cta(int per_k_head) {
  const char* setting = std::getenv("QWEN35_GDN_PREP_HEADS");
  if (setting == nullptr || *setting == '\0') return 1;
  char* end = nullptr;
  const long most = std::strtol(setting, &end, 10);
  TORCH_CHECK(*end == '\0' && most >= 1 && most <= 1024, "qwen35_native: QWEN35_GDN_PREP_HEADS must be a positive "
              "integer (the most value heads per CTA of the GDN pre-pass) or unset (1), got '", setting, "'");
  int heads = 1;
  for (int d = 1; d <= per_k_head && d <= most; ++d) {
    if (per_k_head % d == 0) heads = d;
  }
  return heads;
}

// Whether an automatic choice that took the sm_90a MoE GEMMs (block_m 128) first copies the token rows into tile
// order (moe_permute) so that gate_up loads them with TMA instead of gathering them with cp.async, by the
// environment variable QWEN35_MOE_SORTED_ROWS: "1" yes; "0" or unset no -- not yet timed on a GPU (bench/moe.py
// prints both paths beside each other); it costs a [max_tiles * 128, H] buffer and one write + read of it.
inline bool moe_sorted_rows_auto() {
  return env_switch("QWEN35_MOE_SORTED_ROWS",
                    "0 (gate_up gathers the token rows), 1 (rows copied into tile order first) or unset (0)") == 1;
}

// Whether an automatic choice that took the sm_90a MoE GEMMs runs them in 2-CTA clusters that share each weight tile
// (block_m 256 tiles: TMA multicast halves the weights' L2 -> SM traffic), by the environment variable
// QWEN35_MOE_CLUSTER: "1" yes; "0" or unset no -- not yet run on a GPU (emulated clusters only; bench/moe.py prints
// it beside the others). 256-row tiles pad experts to 256 rows: meant for ~130-250 rows per expert (397b prefill).
inline bool moe_cluster_auto() {
  return env_switch("QWEN35_MOE_CLUSTER",
                    "0 (one CTA per 128-row tile), 1 (2-CTA clusters on 256-row tiles) or unset (0)") == 1;
}

}  // namespace q35::glue
