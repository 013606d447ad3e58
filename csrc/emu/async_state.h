// State of the sm_90 asynchronous units of one running block (mbarriers, TMA loads in flight, warpgroup MMA
// queues, named barriers) and of each thread (wgmma groups, bulk stores), owned by BlockRunner and reset per block.
// The operations are in mbarrier.cpp, tma.cpp, wgmma.cpp and async_proxy.cpp.
#pragma once
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "q35/emu/hopper_emu.h"

namespace q35::simt {

constexpr unsigned kWarpgroupWarps = 4;
constexpr unsigned kWarpgroupThreads = 128;
constexpr unsigned kMaxWarpgroups = 8;  // 1024 threads
constexpr unsigned kNumNamedBarriers = 16;

struct MbarrierState {
  uint64_t* addr = nullptr;
  uint32_t expected = 0;  // arrivals per phase (the count given to mbarrier.init)
  uint32_t pending = 0;   // arrivals still missing in the current phase
  int64_t tx = 0;         // tx-count of the current phase (expect_tx adds, complete_tx subtracts)
  uint32_t phase = 0;     // completed phases; the current phase has parity phase & 1
  bool init_fenced = false;  // the initialising thread fenced (fence.mbarrier_init / fence.proxy.async) since
  unsigned init_tid = 0;
  Site init_site{nullptr, 0};
  uint64_t witness = 0;   // what the emulator last wrote into the 8 bytes (an ordinary store changes it)
};

struct TmaCopy {          // a TMA load in flight, or a TMA store not yet performed
  TensorMapEmu map;
  int32_t coords[kTensorMapMaxRank];
  uint32_t smem;          // shared address of the box
  uint64_t* bar;          // loads: the mbarrier that completes them
  unsigned tid;
  Site site;
};

// One wgmma.mma_async of a warpgroup: the k-th instruction of each of its four warps.
struct WgmmaOp {
  int n = 0;
  MmaInput type = MmaInput::kBf16;
  bool a_regs = false;
  int scale_d = 0;
  uint64_t desc_a = 0, desc_b = 0;
  bool trans_b = false;           // B MN-major (imm-trans-b = 1)
  Site site{nullptr, 0};
  uint32_t warps_issued = 0;      // bit w: warp w of the warpgroup has issued it
  bool chained[kWarpgroupWarps];  // D accumulates onto a pending wgmma's D: C is read at completion
  float* d[kWarpgroupThreads];    // each thread's accumulator registers
  uint32_t a[kWarpgroupThreads][4];
  std::vector<float> c;           // [128][n / 2] accumulators at issue (scale_d, not chained)
};

struct WarpgroupQueue {
  std::deque<WgmmaOp> ops;        // not yet completed, oldest first; ops[i] has sequence first_seq + i
  uint64_t first_seq = 0;
  uint64_t issued[kWarpgroupWarps] = {0, 0, 0, 0};  // wgmma instructions issued by each warp
};

struct NamedBarrierState {
  uint32_t expected = 0;
  uint32_t arrived = 0;
  Site site{nullptr, 0};
};

// Per thread.
struct FiberAsync {
  bool wgmma_fenced = false;              // wgmma.fence since the start or the last wgmma.wait_group
  bool wgmma_may_complete = false;        // woken by the scheduler to complete fully issued wgmmas
  std::vector<uint64_t> wgmma_group_ends;  // committed group g = this warp's wgmmas [end of g-1, end of g)
  size_t wgmma_groups_waited = 0;
  uint64_t wgmma_waited_seq = 0;           // wgmmas before this sequence number were waited for
  std::vector<TmaCopy> stores;             // issued TMA stores, oldest first
  std::vector<size_t> store_group_ends;
  size_t stores_done = 0, store_groups_done = 0;
  uint64_t* wait_bar = nullptr;            // mbarrier.try_wait in progress
  uint32_t wait_parity = 0;
  uint32_t named_barrier = 0;              // named barrier being waited at (1..15)
  bool cluster_arrived = false;            // barrier.cluster.arrive done, its wait not yet
  uint32_t cluster_phase = 0;              // the cluster barrier's phase this thread arrived in

  void reset() {
    cluster_arrived = false;
    cluster_phase = 0;
    wgmma_fenced = false;
    wgmma_may_complete = false;
    wgmma_group_ends.clear();
    wgmma_groups_waited = 0;
    wgmma_waited_seq = 0;
    stores.clear();
    store_group_ends.clear();
    stores_done = store_groups_done = 0;
    wait_bar = nullptr;
    named_barrier = 0;
  }
};

// Per block.
struct AsyncUnits {
  int sm = 90;
  std::vector<MbarrierState> barriers;
  std::vector<TmaCopy> loads;             // TMA loads in flight, in issue order
  WarpgroupQueue warpgroups[kMaxWarpgroups];
  NamedBarrierState named[kNumNamedBarriers];

  void reset(int arch_sm) {
    sm = arch_sm;
    barriers.clear();
    loads.clear();
    for (auto& wg : warpgroups) wg = WarpgroupQueue{};
    for (auto& nb : named) nb = NamedBarrierState{};
  }
  MbarrierState* find_barrier(const uint64_t* addr) {
    for (auto& b : barriers)
      if (b.addr == addr) return &b;
    return nullptr;
  }
};

}  // namespace q35::simt
