// The async proxy on the emulator: shared addresses of dynamic shared memory, the async-proxy view of it (TMA
// writes both views; fence.proxy.async publishes the generic view; wgmma and TMA stores read the async view and
// compare it with the generic one, so a missing fence is an error), and the per-thread / per-block checks of the
// sm_90 units at thread exit, at block end and in deadlock reports.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "emu/async_ops.h"

namespace q35::simt {

BlockRunner& kernel_runner(const char* what) {
  BlockRunner* r = active_runner();
  if (!r || !r->in_fiber()) throw Error(std::string("qwen35_native emulator: ") + what + " called outside a kernel");
  return *r;
}

BlockRunner& sm90_runner(const char* what, Site site) {
  BlockRunner& r = kernel_runner(what);
  if (r.async_units().sm < 90) {
    async_error(std::string(what) + " needs sm_90a, but the emulated architecture is sm_" +
                    std::to_string(r.async_units().sm) + " (emulator.arch)",
                site);
  }
  return r;
}

void async_error(const std::string& what, Site site) { kernel_error(what.c_str(), site); }

std::string hex_addr(const void* p) {
  const BlockRunner* r = active_runner();
  const auto addr = reinterpret_cast<uintptr_t>(p);
  char buf[48];
  if (r && addr >= reinterpret_cast<uintptr_t>(r->smem_base()) &&
      addr < reinterpret_cast<uintptr_t>(r->smem_base()) + r->smem_bytes()) {
    const auto offset = static_cast<size_t>(addr - reinterpret_cast<uintptr_t>(r->smem_base()));
    std::snprintf(buf, sizeof(buf), "smem+%zu", offset);
  } else {
    std::snprintf(buf, sizeof(buf), "%p", p);
  }
  return buf;
}

std::string thread_ranges(const std::vector<unsigned>& tids) {
  std::string out;
  for (size_t i = 0; i < tids.size();) {
    size_t j = i;
    while (j + 1 < tids.size() && tids[j + 1] == tids[j] + 1) ++j;
    if (!out.empty()) out += ", ";
    out += j == i ? std::to_string(tids[i]) : std::to_string(tids[i]) + "-" + std::to_string(tids[j]);
    i = j + 1;
  }
  return out.empty() ? "none" : out;
}

uint32_t checked_shared_address(BlockRunner& r, const void* p, uint64_t bytes, const char* what, Site site) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  const auto base = reinterpret_cast<uintptr_t>(r.smem_base());
  if (addr < base || addr - base + bytes > r.smem_bytes()) {
    async_error(std::string(what) + ": " + std::to_string(bytes) + " byte(s) at " + hex_addr(p) +
                    " are not inside the launch's dynamic shared memory (" + std::to_string(r.smem_bytes()) +
                    " bytes; the async units of the emulator address Q35_DYNAMIC_SMEM only)",
                site);
  }
  return static_cast<uint32_t>(addr - base);
}

uint32_t shared_address(const void* smem_ptr, Site site) {
  BlockRunner& r = kernel_runner("smem_u32");
  return checked_shared_address(r, smem_ptr, 0, "smem_u32", site);
}

void BlockRunner::publish_smem() { std::memcpy(smem_shadow_, smem_base_, smem_bytes_); }

namespace {
void fence_barrier_inits(BlockRunner& r) {
  const unsigned tid = r.running().ctx.linear_tid;
  for (auto& b : r.async_units().barriers)
    if (b.init_tid == tid) b.init_fenced = true;
}
}  // namespace

void fence_proxy_async(Site site) {
  BlockRunner& r = sm90_runner("fence.proxy.async", site);
  fence_barrier_inits(r);
  r.publish_smem();
}

void fence_mbarrier_init(Site site) { fence_barrier_inits(sm90_runner("fence.mbarrier_init", site)); }

void BlockRunner::async_thread_exit(Fiber& f) {
  perform_thread_stores(*this, f, f.async.stores.size());
  const unsigned warp = f.ctx.warp;
  if (warp / kWarpgroupWarps >= kMaxWarpgroups) return;
  const WarpgroupQueue& q = async_.warpgroups[warp / kWarpgroupWarps];
  const uint64_t issued = q.issued[warp % kWarpgroupWarps];
  if (issued > f.async.wgmma_waited_seq) {
    fail(f, "this thread exits with " + std::to_string(issued - f.async.wgmma_waited_seq) +
                " wgmma.mma_async operation(s) it never waited for (commit them and wgmma.wait_group before "
                "reading the accumulators)");
  }
}

std::string BlockRunner::describe_async_waits() const {
  return describe_mbarrier_waits(*this) + describe_tma_loads(*this) + describe_wgmma_waits(*this) +
         describe_named_barrier_waits(*this) + describe_cluster_barrier_waits(*this);
}

bool BlockRunner::run_async_units() {
  bool woke = false;
  for (unsigned t = 0; t < num_threads_; ++t) {
    Fiber& f = *fibers_[t];
    if (f.state != FiberState::kBlocked) continue;
    if (f.wait == WaitKind::kMbarrier) {
      for (const TmaCopy& ld : async_.loads) {
        if (ld.bar == f.async.wait_bar) {
          wake(f);  // its try_wait performs the loads (in a fiber, where a fault is that thread's)
          woke = true;
          break;
        }
      }
    } else if (f.wait == WaitKind::kWgmma) {
      const WarpgroupQueue& q = async_.warpgroups[f.ctx.warp / kWarpgroupWarps];
      if (!q.ops.empty() && q.ops.front().warps_issued == (1u << kWarpgroupWarps) - 1) {
        f.async.wgmma_may_complete = true;  // its wait_group completes the wgmmas
        wake(f);
        woke = true;
      }
    }
  }
  return woke;
}

void BlockRunner::check_async_at_block_end() {
  if (async_.loads.empty()) return;
  const TmaCopy& ld = async_.loads.front();
  throw_error(fibers_[ld.tid].get(),
              std::to_string(async_.loads.size()) + " TMA load(s) still in flight when the block finished; the "
              "first was issued at " + site_str(ld.site) + " on mbarrier " + hex_addr(ld.bar) +
              ", which no thread waited on after it (a wait on the wrong parity returns before the copy lands)");
}

}  // namespace q35::simt
