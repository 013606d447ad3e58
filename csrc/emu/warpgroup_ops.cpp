// elect.sync and named barriers (bar.sync / bar.arrive with an id and a thread count) on the emulator: the
// synchronisation that warp-specialised kernels use beside mbarriers (e.g. the consumer warpgroups of a block
// meeting without the producer warp).
#include <string>
#include <vector>

#include "emu/async_ops.h"

namespace q35::simt {
namespace {

struct ElectArgs {
  bool elected;
};

void elect_compute(void* const* args, uint32_t, uint32_t arrived) {
  const int leader = __builtin_ctz(arrived);
  for (uint32_t m = arrived; m; m &= m - 1) {
    const int l = __builtin_ctz(m);
    static_cast<ElectArgs*>(args[l])->elected = l == leader;
  }
}

const CollectiveOp kElectOp{"elect.sync", false, elect_compute};

}  // namespace

bool elect_one(uint32_t mask, Site site) {
  sm90_runner("elect.sync", site);
  ElectArgs args{false};
  warp_collective(kElectOp, mask, &args, site);
  return args.elected;
}

void named_barrier(uint32_t id, uint32_t num_threads, bool wait, Site site) {
  const char* what = wait ? "bar.sync (named barrier)" : "bar.arrive (named barrier)";
  BlockRunner& r = kernel_runner(what);
  if (id < 1 || id >= kNumNamedBarriers)
    async_error(std::string(what) + ": id must be in [1, 15] (0 is __syncthreads), got " + std::to_string(id), site);
  const unsigned padded = (r.num_threads() + kWarpLanes - 1) / kWarpLanes * kWarpLanes;
  if (num_threads == 0 || num_threads % kWarpLanes != 0 || num_threads > padded) {
    async_error(std::string(what) + ": the thread count must be a non-zero multiple of 32 and at most the block's " +
                    std::to_string(padded) + ", got " + std::to_string(num_threads),
                site);
  }
  NamedBarrierState& nb = r.async_units().named[id];
  if (nb.arrived == 0) {
    nb.expected = num_threads;
    nb.site = site;
  } else if (nb.expected != num_threads) {
    async_error(std::string(what) + " " + std::to_string(id) + " with " + std::to_string(num_threads) +
                    " threads while " + std::to_string(nb.arrived) + " thread(s) arrived expecting " +
                    std::to_string(nb.expected) + " (at " + site_str(nb.site) + ")",
                site);
  }
  if (++nb.arrived == nb.expected) {
    nb.arrived = 0;
    for (unsigned t = 0; t < r.num_threads(); ++t) {
      Fiber& f = r.fiber(t);
      if (f.state == FiberState::kBlocked && f.wait == WaitKind::kNamedBarrier && f.async.named_barrier == id)
        r.wake(f);
    }
    return;
  }
  if (!wait) return;
  Fiber& f = r.running();
  f.async.named_barrier = id;
  r.block_running(WaitKind::kNamedBarrier, site, what, 0);
  f.async.named_barrier = 0;
}

std::string describe_named_barrier_waits(const BlockRunner& r) {
  std::string out;
  for (uint32_t id = 1; id < kNumNamedBarriers; ++id) {
    const NamedBarrierState& nb = r.async_units().named[id];
    if (nb.arrived == 0) continue;
    std::vector<unsigned> waiting;
    for (unsigned t = 0; t < r.num_threads(); ++t) {
      const Fiber& f = r.fiber(t);
      if (f.state == FiberState::kBlocked && f.wait == WaitKind::kNamedBarrier && f.async.named_barrier == id)
        waiting.push_back(t);
    }
    out += "\n    named barrier " + std::to_string(id) + ": " + std::to_string(nb.arrived) + " of " +
           std::to_string(nb.expected) + " threads arrived (first at " + site_str(nb.site) + "); waiting: threads " +
           thread_ranges(waiting);
  }
  return out;
}

}  // namespace q35::simt
