// wgmma on the emulator. Each warp's wgmma.mma_async is a warp collective that records the warp's part of the
// warpgroup instruction (accumulator pointers, the accumulators at issue, A registers) and overwrites the
// accumulators with NaN; the multiply happens when a thread's wgmma.wait_group retires the instruction, reading
// the shared-memory operands then (from the async-proxy view, which must equal the generic view). So reading the
// accumulators before the wait, changing them or the shared operands before it, or a missing fence.proxy.async
// before it all show. Layouts: PTX_FACTS.md §6; numerics as mma.sync (exact products, fp32 accumulation rounded
// once per instruction). B may be MN-major (imm-trans-b; element_address_mn).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "emu/async_ops.h"
#include "emu/half_bits.h"

namespace q35::simt {
namespace {

constexpr uint32_t kFullMask = 0xffffffffu;
constexpr int kM = 64;
constexpr int kK = 16;
constexpr uint32_t kAllWarps = (1u << kWarpgroupWarps) - 1;
constexpr uint64_t kDescFieldBits = 0x3FFFull | (0x3FFFull << 16) | (0x3FFFull << 32) | (0x7ull << 49) | (0x3ull << 62);

// Fragments of thread t of the warpgroup (PTX_FACTS §6): accumulator d[i]; A register element e (RS form).
int acc_row(int t, int i) { return 16 * (t / 32) + (t % 32) / 4 + 8 * ((i >> 1) & 1); }
int acc_col(int t, int i) { return 8 * (i >> 2) + 2 * (t % 4) + (i & 1); }
int a_row(int t, int e) { return 16 * (t / 32) + (t % 32) / 4 + 8 * ((e >> 1) & 1); }
int a_col(int t, int e) { return 2 * (t % 4) + (e & 1) + 8 * (e >> 2); }

struct IssueArgs {
  int n;
  int scale_d;
  uint64_t desc_a, desc_b;
  bool trans_b;
  float* d;
  const uint32_t* a;
  Site site;
};

struct DescView {
  uint32_t start, lbo, sbo;
  uint32_t swizzle;  // bytes of a swizzle row; 0 = no swizzle (core matrices)
};

std::string hex64(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

DescView decode(uint64_t desc, const char* which, Site site, bool mn_major = false) {
  const std::string what = std::string("wgmma.mma_async: the ") + which + " descriptor " + hex64(desc);
  if (desc & ~kDescFieldBits) async_error(what + " sets reserved bits", site);
  if ((desc >> 49) & 7) {
    async_error(what + " has a non-zero base offset, which the emulator does not model: start swizzled tiles on "
                       "their pattern boundary",
                site);
  }
  static constexpr uint32_t kSwizzleOfLayout[4] = {0, 128, 64, 32};
  DescView v{static_cast<uint32_t>(desc & 0x3FFF) << 4, static_cast<uint32_t>((desc >> 16) & 0x3FFF) << 4,
             static_cast<uint32_t>((desc >> 32) & 0x3FFF) << 4, kSwizzleOfLayout[desc >> 62]};
  if (v.swizzle) {
    if (((v.start >> 7) & (v.swizzle / 16 - 1)) != 0) {
      async_error(what + ": a " + std::to_string(v.swizzle) + "B-swizzled operand must start in the first row of "
                         "a pattern (shared address " + std::to_string(v.start) + ")",
                  site);
    }
    if (mn_major && v.start % v.swizzle != 0) {
      async_error(what + ": an MN-major " + std::to_string(v.swizzle) + "B-swizzled operand must start at the "
                         "beginning of a swizzle row (shared address " + std::to_string(v.start) + ")",
                  site);
    }
    if (!mn_major && v.start % v.swizzle + 2 * kK > v.swizzle)
      async_error(what + ": the 16 columns starting at byte " + std::to_string(v.start % v.swizzle) +
                      " do not fit in a " + std::to_string(v.swizzle) + "-byte swizzle row",
                  site);
  }
  return v;
}

// Shared address of element (row, k) of a K-major operand (PTX canonical layouts, PTX_FACTS §6).
uint32_t element_address(const DescView& v, int row, int k) {
  if (!v.swizzle) return v.start + (row % 8) * 16 + (row / 8) * v.sbo + (k / 8) * v.lbo + (k % 8) * 2;
  const uint32_t logical = v.start + (row % 8) * v.swizzle + (row / 8) * v.sbo + 2 * k;
  return logical ^ (((logical >> 7) & (v.swizzle / 16 - 1)) << 4);
}

// Shared address of element (n, k) of an MN-major operand (imm-trans = 1; PTX canonical layouts, LOW until the
// -m gpu twins in tests/emu/test_wgmma.py pass on an H100/H200). No swizzle ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO)):
// core matrices of 8 k-rows of 16 bytes (8 MN elements), SBO between them along MN and LBO along K. Swizzled,
// S = 32 / 64 / 128 bytes ((T,S/16,m),(8,k)):((1,T,LBO),(S/16 T,SBO)): atoms of 8 k-rows of S bytes (S / 2 MN
// elements), LBO between atoms along MN, SBO along K, the swizzle XOR on the byte address as for K-major.
uint32_t element_address_mn(const DescView& v, int n, int k) {
  if (!v.swizzle) return v.start + (n % 8) * 2 + (n / 8) * v.sbo + (k % 8) * 16 + (k / 8) * v.lbo;
  const uint32_t w = v.swizzle / 2;  // MN elements per swizzle row
  const uint32_t logical = v.start + (n % w) * 2 + (n / w) * v.lbo + (k % 8) * v.swizzle + (k / 8) * v.sbo;
  return logical ^ (((logical >> 7) & (v.swizzle / 16 - 1)) << 4);
}

// out[row * 16 + k] for rows [0, rows) (M or N index): read from the async-proxy view, which must match the
// generic view. mn_major: the operand is stored MN-major (B with imm-trans-b).
void read_operand(BlockRunner& r, const WgmmaOp& op, uint64_t desc, int rows, const char* which, float* out,
                  bool mn_major = false) {
  const DescView v = decode(desc, which, op.site, mn_major);
  const unsigned char* real = r.smem_base();
  const unsigned char* shadow = r.smem_shadow();
  for (int row = 0; row < rows; ++row) {
    for (int k = 0; k < kK; ++k) {
      const uint32_t addr = mn_major ? element_address_mn(v, row, k) : element_address(v, row, k);
      if (addr + 2 > r.smem_bytes()) {
        async_error(std::string("wgmma.mma_async issued at ") + site_str(op.site) + ": " + which + " element (" +
                        std::to_string(row) + ", " + std::to_string(k) + ") at shared address " +
                        std::to_string(addr) + " lies past the launch's dynamic shared memory",
                    op.site);
      }
      uint16_t bits, generic;
      std::memcpy(&bits, shadow + addr, 2);
      std::memcpy(&generic, real + addr, 2);
      if (bits != generic) {
        async_error(std::string("wgmma.mma_async issued at ") + site_str(op.site) + " reads " + which + " element (" +
                        std::to_string(row) + ", " + std::to_string(k) + ") at shared address " +
                        std::to_string(addr) + ", whose ordinary stores were not made visible to the async proxy: "
                        "fence.proxy.async.shared::cta after writing it (before the wgmma), and do not overwrite "
                        "operands before the wgmma.wait_group that retires the wgmma",
                    op.site);
      }
      out[row * kK + k] = input_bits_to_float(op.type, bits);
    }
  }
}

// acc[64][n] += a[64][16] * b[16][n], adding the products of each element in k order. The products of 16-bit
// inputs are exact in double, so a fused multiply-add rounds the same way: vector code (AVX2 where the CPU has
// it) gives the same bits as the scalar loop. n is a multiple of 8.
using Vec4d = double __attribute__((vector_size(32), aligned(8)));
__attribute__((target_clones("arch=haswell", "default"))) void multiply_add(double* acc, const float* a,
                                                                            const double* b, int n) {
  for (int m = 0; m < kM; ++m) {
    auto* row = reinterpret_cast<Vec4d*>(acc + static_cast<size_t>(m) * n);
    for (int k = 0; k < kK; ++k) {
      const double am = a[m * kK + k];
      const auto* bk = reinterpret_cast<const Vec4d*>(b + static_cast<size_t>(k) * n);
      for (int j = 0; j < n / 4; ++j) row[j] += am * bk[j];
    }
  }
}

// Hands each warp's part of D to where it goes next: the accumulator registers, or -- when a later pending wgmma
// of the warp accumulates onto the same registers (issued before this one retired, e.g. the next stage's wgmmas
// under wait_group<1>) -- that wgmma's C. The registers then stay NaN (its issue made them NaN) until the last
// wgmma of the chain retires; reading them back here would read the later issue's NaNs.
void deliver(WarpgroupQueue& q, const WgmmaOp& op, const std::vector<double>& acc) {
  const int n = op.n, regs = n / 2;
  for (unsigned wi = 0; wi < kWarpgroupWarps; ++wi) {
    WgmmaOp* next = nullptr;
    for (size_t j = 1; j < q.ops.size() && !next; ++j) {
      WgmmaOp& p = q.ops[j];
      if ((p.warps_issued >> wi & 1) && p.n == n && p.d[wi * kWarpLanes] == op.d[wi * kWarpLanes]) next = &p;
    }
    if (next && next->scale_d && next->c.empty()) next->c.assign(kWarpgroupThreads * static_cast<size_t>(regs), 0.0f);
    for (unsigned t = wi * kWarpLanes; t < (wi + 1) * kWarpLanes; ++t) {
      for (int i = 0; i < regs; ++i) {
        const float v = static_cast<float>(acc[static_cast<size_t>(acc_row(t, i)) * n + acc_col(t, i)]);
        if (!next) {
          op.d[t][i] = v;
        } else if (next->scale_d) {
          next->c[static_cast<size_t>(t) * regs + i] = v;
        }
      }
    }
    if (next) next->chained[wi] = false;
  }
}

// D = A * B + C of the oldest pending instruction of queue q (op = q.ops.front()), delivered as above.
void compute(BlockRunner& r, WarpgroupQueue& q, const WgmmaOp& op) {
  const int n = op.n, regs = n / 2;
  thread_local std::vector<float> a, bt;
  thread_local std::vector<double> b, acc;
  a.resize(kM * kK);
  bt.resize(static_cast<size_t>(n) * kK);
  b.resize(static_cast<size_t>(n) * kK);
  acc.resize(static_cast<size_t>(kM) * n);
  if (!op.a_regs) {
    read_operand(r, op, op.desc_a, kM, "A", a.data());
  } else {
    for (int t = 0; t < static_cast<int>(kWarpgroupThreads); ++t)
      for (int e = 0; e < 8; ++e)
        a[a_row(t, e) * kK + a_col(t, e)] =
            input_bits_to_float(op.type, static_cast<uint16_t>(op.a[t][e >> 1] >> (16 * (e & 1))));
  }
  read_operand(r, op, op.desc_b, n, "B", bt.data(), op.trans_b);
  for (int nn = 0; nn < n; ++nn)
    for (int k = 0; k < kK; ++k) b[static_cast<size_t>(k) * n + nn] = bt[static_cast<size_t>(nn) * kK + k];
  for (int t = 0; t < static_cast<int>(kWarpgroupThreads); ++t) {
    const bool chained = op.chained[t / kWarpLanes];
    for (int i = 0; i < regs; ++i) {
      const double c = !op.scale_d ? 0.0 : (chained ? op.d[t][i] : op.c[static_cast<size_t>(t) * regs + i]);
      acc[static_cast<size_t>(acc_row(t, i)) * n + acc_col(t, i)] = c;
    }
  }
  multiply_add(acc.data(), a.data(), b.data(), n);
  deliver(q, op, acc);
}

void check_uniform(void* const* args, unsigned warp, bool a_regs) {
  const auto* first = static_cast<const IssueArgs*>(args[0]);
  for (unsigned l = 1; l < kWarpLanes; ++l) {
    const auto* x = static_cast<const IssueArgs*>(args[l]);
    if (x->n != first->n || x->scale_d != first->scale_d || x->desc_b != first->desc_b ||
        x->trans_b != first->trans_b || (!a_regs && x->desc_a != first->desc_a)) {
      async_error("wgmma.mma_async: lane " + std::to_string(l) + " of warp " + std::to_string(warp) +
                      " passes other operands (scale-d, descriptors) than lane 0: they must be the same in every "
                      "thread of the warpgroup",
                  first->site);
    }
  }
}

void check_issuer(BlockRunner& r, unsigned warp, Site site) {
  const unsigned wg = warp / kWarpgroupWarps;
  if (r.num_threads() < (wg + 1) * kWarpgroupThreads) {
    async_error("wgmma.mma_async needs the whole warpgroup " + std::to_string(wg) + " (warps " +
                    std::to_string(wg * kWarpgroupWarps) + "-" + std::to_string(wg * kWarpgroupWarps + 3) +
                    ", 128 threads), but the block has " + std::to_string(r.num_threads()) + " threads",
                site);
  }
  for (unsigned l = 0; l < kWarpLanes; ++l) {
    if (!r.fiber(warp * kWarpLanes + l).async.wgmma_fenced) {
      async_error("wgmma.mma_async without wgmma.fence: every warp of the warpgroup must execute wgmma.fence "
                  "before its first wgmma and again after each wgmma.wait_group (after which the registers may have "
                  "been accessed); lane " + std::to_string(l) + " of warp " + std::to_string(warp) + " did not",
                  site);
    }
  }
}

bool chains_onto_pending(const WarpgroupQueue& q, size_t idx, unsigned wi, const float* d, int n, Site site) {
  bool chained = false;
  for (size_t j = 0; j < idx; ++j) {
    const WgmmaOp& p = q.ops[j];
    if (!(p.warps_issued >> wi & 1)) continue;
    const float* pd = p.d[wi * kWarpLanes];
    if (pd == d && p.n == n) {
      chained = true;
    } else if (pd < d + n / 2 && d < pd + p.n / 2) {
      async_error("wgmma.mma_async: its accumulators overlap those of a pending wgmma of another shape (issued at " +
                      site_str(p.site) + "); wait for it first",
                  site);
    }
  }
  return chained;
}

// Records warp `warp`'s part of its next wgmma (per-warp collective, run by the last lane to arrive).
template <bool kRegs, MmaInput kType>
void issue_compute(void* const* args, uint32_t, uint32_t) {
  BlockRunner& r = *active_runner();
  const unsigned warp = r.running().ctx.warp;
  const auto* first = static_cast<const IssueArgs*>(args[0]);
  const Site site = first->site;
  check_uniform(args, warp, kRegs);
  check_issuer(r, warp, site);
  if (!kRegs) decode(first->desc_a, "A", site);
  decode(first->desc_b, "B", site, first->trans_b);
  const unsigned wg = warp / kWarpgroupWarps, wi = warp % kWarpgroupWarps;
  WarpgroupQueue& q = r.async_units().warpgroups[wg];
  const size_t idx = q.issued[wi]++ - q.first_seq;
  if (idx == q.ops.size()) {
    WgmmaOp& op = q.ops.emplace_back();
    op.n = first->n;
    op.type = kType;
    op.a_regs = kRegs;
    op.scale_d = first->scale_d;
    op.desc_a = kRegs ? 0 : first->desc_a;
    op.desc_b = first->desc_b;
    op.trans_b = first->trans_b;
    op.site = site;
  }
  WgmmaOp& op = q.ops[idx];
  if (op.n != first->n || op.type != kType || op.a_regs != kRegs || op.scale_d != first->scale_d ||
      op.desc_b != first->desc_b || op.trans_b != first->trans_b || (!kRegs && op.desc_a != first->desc_a)) {
    async_error("wgmma.mma_async #" + std::to_string(q.first_seq + idx) + " of warp " + std::to_string(warp) +
                    " differs from the same instruction of another warp of its warpgroup (issued at " +
                    site_str(op.site) + "): shape, types, scale-d and descriptors must match",
                site);
  }
  const int regs = op.n / 2;
  op.chained[wi] = chains_onto_pending(q, idx, wi, first->d, op.n, site);
  if (op.scale_d && !op.chained[wi] && op.c.empty()) op.c.assign(kWarpgroupThreads * static_cast<size_t>(regs), 0.0f);
  for (unsigned l = 0; l < kWarpLanes; ++l) {
    const auto* x = static_cast<const IssueArgs*>(args[l]);
    const unsigned t = wi * kWarpLanes + l;
    op.d[t] = x->d;
    if (kRegs) std::copy(x->a, x->a + 4, op.a[t]);
    if (op.scale_d && !op.chained[wi]) std::copy(x->d, x->d + regs, op.c.begin() + static_cast<ptrdiff_t>(t) * regs);
    std::fill(x->d, x->d + regs, std::numeric_limits<float>::quiet_NaN());  // undefined until the wait
  }
  op.warps_issued |= 1u << wi;
}

const CollectiveOp kIssueOps[2][2] = {
    {{"wgmma.mma_async (A from shared memory, bf16)", false, issue_compute<false, MmaInput::kBf16>},
     {"wgmma.mma_async (A from shared memory, f16)", false, issue_compute<false, MmaInput::kF16>}},
    {{"wgmma.mma_async (A from registers, bf16)", false, issue_compute<true, MmaInput::kBf16>},
     {"wgmma.mma_async (A from registers, f16)", false, issue_compute<true, MmaInput::kF16>}}};

// Waits until this warpgroup's wgmmas with sequence numbers below `target` are complete. They complete as late as
// possible: when no thread of the block can run, the scheduler wakes the waiting threads to complete them
// (BlockRunner::run_async_units), so the accumulators stay NaN and the operands are read after everything the
// other threads could do in between (a TMA refilling the stage, a store to the tile).
void retire_upto(BlockRunner& r, unsigned wg, uint64_t target, Site site) {
  WarpgroupQueue& q = r.async_units().warpgroups[wg];
  FiberAsync& a = r.running().async;
  while (q.first_seq < target) {
    const WgmmaOp& op = q.ops.front();
    if (a.wgmma_may_complete && op.warps_issued == kAllWarps) {
      compute(r, q, op);
      q.ops.pop_front();
      ++q.first_seq;
      continue;
    }
    a.wgmma_may_complete = false;
    r.block_running(WaitKind::kWgmma, site, "wgmma.wait_group", 0);
  }
  a.wgmma_may_complete = false;
}

}  // namespace

void wgmma_fence(Site site) { sm90_runner("wgmma.fence", site).running().async.wgmma_fenced = true; }

void wgmma_mma_async(int n, MmaInput type, float* d, uint64_t desc_a, const uint32_t* a_regs, uint64_t desc_b,
                     bool trans_b, int scale_d, Site site) {
  sm90_runner("wgmma.mma_async", site);
  if (n < 8 || n > 256 || n % 8 != 0)
    async_error("wgmma.mma_async: N must be a multiple of 8 in [8, 256], got " + std::to_string(n), site);
  IssueArgs args{n, scale_d != 0, desc_a, desc_b, trans_b, d, a_regs, site};
  warp_collective(kIssueOps[a_regs != nullptr][static_cast<int>(type)], kFullMask, &args, site);
}

void wgmma_commit_group(Site site) {
  BlockRunner& r = sm90_runner("wgmma.commit_group", site);
  Fiber& f = r.running();
  const unsigned warp = f.ctx.warp;
  f.async.wgmma_group_ends.push_back(
      r.async_units().warpgroups[warp / kWarpgroupWarps].issued[warp % kWarpgroupWarps]);
}

void wgmma_wait_group(int pending, Site site) {
  BlockRunner& r = sm90_runner("wgmma.wait_group", site);
  Fiber& f = r.running();
  FiberAsync& a = f.async;
  const size_t committed = a.wgmma_group_ends.size();
  if (committed - a.wgmma_groups_waited > static_cast<size_t>(pending)) {
    const uint64_t target = a.wgmma_group_ends[committed - 1 - static_cast<size_t>(pending)];
    a.wgmma_groups_waited = committed - static_cast<size_t>(pending);
    retire_upto(r, f.ctx.warp / kWarpgroupWarps, target, site);
    a.wgmma_waited_seq = std::max(a.wgmma_waited_seq, target);
  }
  a.wgmma_fenced = false;
}

std::string describe_wgmma_waits(const BlockRunner& r) {
  std::string out;
  for (unsigned g = 0; g < kMaxWarpgroups; ++g) {
    const WarpgroupQueue& q = r.async_units().warpgroups[g];
    for (size_t i = 0; i < q.ops.size(); ++i) {
      const WgmmaOp& op = q.ops[i];
      if (op.warps_issued == kAllWarps) continue;
      std::string by, missing;
      for (unsigned w = 0; w < kWarpgroupWarps; ++w)
        (op.warps_issued >> w & 1 ? by : missing) += " " + std::to_string(g * kWarpgroupWarps + w);
      out += "\n    wgmma.mma_async #" + std::to_string(q.first_seq + i) + " of warpgroup " + std::to_string(g) +
             " (first issued at " + site_str(op.site) + ") was issued by warp(s)" + by + " but not by warp(s)" +
             missing + " (a warpgroup is warps 4g..4g+3)";
      break;
    }
  }
  return out;
}

}  // namespace q35::simt
