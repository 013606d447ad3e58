// The per-OS-thread engine that runs one thread block at a time: its fibers (one per CUDA thread), the block
// barrier, the warps' pending collectives, and the scheduler that resumes runnable fibers in the selected order.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "emu/async_state.h"
#include "emu/config.h"
#include "emu/context.h"
#include "emu/cp_async_queue.h"
#include "q35/emu/runtime.h"

namespace q35::simt {

constexpr unsigned kWarpLanes = 32;
constexpr unsigned kMaxBlockThreads = 1024;
constexpr unsigned kMaxWarps = kMaxBlockThreads / kWarpLanes;

enum class FiberState : uint8_t { kRunnable, kBlocked, kExited };
enum class WaitKind : uint8_t {
  kNone, kBarrier, kCollective, kActiveMask, kMbarrier, kWgmma, kNamedBarrier, kClusterBarrier
};

struct Fiber {
  ThreadCtx ctx;  // first: current_thread() hands out &ctx
  MachineContext machine;
  Stack stack;
  FiberState state = FiberState::kExited;
  WaitKind wait = WaitKind::kNone;
  Site wait_site{nullptr, 0};
  const char* wait_name = nullptr;
  uint32_t wait_mask = 0;
  uint32_t activemask_result = 0;
  CpAsyncQueue cp_async;
  FiberAsync async;  // sm_90: wgmma groups, TMA stores, mbarrier waits
};

struct Collective {
  const CollectiveOp* op;
  uint32_t mask;
  uint32_t arrived;
  Site site;
  void* args[kWarpLanes];
};

struct WarpState {
  uint32_t present = 0;  // lanes that exist (a partial last warp has fewer)
  uint32_t exited = 0;
  uint32_t activemask_waiting = 0;
  unsigned num_pending = 0;
  Collective pending[kWarpLanes];  // lanes are in at most one pending collective each
};

enum class FaultKind : int { kNone, kStackOverflow, kSmemOutOfBounds, kInvalidAddress, kDivideByZero };
struct Fault {
  volatile int kind = 0;  // FaultKind, written by the signal handler
  const void* address = nullptr;
};

struct BlockStats {
  uint64_t switches = 0, barriers = 0, collectives = 0;
};

class BlockRunner;

// The blocks of one thread block cluster, run together on one OS thread (every launch has clusters: of one block
// unless q35::launch_cluster gives more), and the cluster barrier (barrier.cluster.arrive / wait; cluster.cpp).
struct ClusterState {
  std::vector<BlockRunner*> ctas;  // by %cluster_ctarank
  unsigned threads = 0;            // threads of all its blocks: the cluster barrier's count
  unsigned barrier_arrived = 0;    // arrivals in the current phase
  uint32_t barrier_phase = 0;      // completed phases
};

// Runs one cluster (block_idx[r], block_seq[r]: the block of rank r and its linear index in the grid) on the
// runners in cluster.ctas to completion; throws Error on a fault or deadlock.
void run_cluster(const LaunchSpec& spec, ClusterState& cluster, const uint3* block_idx, const uint64_t* block_seq,
                 const Schedule& schedule, size_t stack_bytes, int arch_sm);

class BlockRunner {
 public:
  BlockRunner();
  ~BlockRunner();
  BlockRunner(const BlockRunner&) = delete;
  BlockRunner& operator=(const BlockRunner&) = delete;

  // ---- run by run_cluster: set up, rounds until done (each runnable thread resumed once), progress when no
  // thread of the cluster can run, the deadlock report ----
  void begin(const LaunchSpec& spec, uint3 block_idx, const Schedule& schedule, uint64_t block_seq,
             size_t stack_bytes, int arch_sm, ClusterState* cluster, unsigned cluster_rank);
  bool step_round(const Schedule& schedule);  // true when a thread ran
  bool done() const { return num_exited_ == num_threads_; }
  bool unblock();                             // __activemask groups, else the async units (see run_async_units)
  std::string deadlock_details(const Fiber*& blame, bool& inconsistent) const;
  [[noreturn]] void throw_error(const Fiber* f, const std::string& what);
  BlockStats take_stats();
  ClusterState& cluster() { return *cluster_; }
  unsigned cluster_rank() const { return cluster_rank_; }

  // ---- called from fibers (the running thread) ----
  Fiber& running() { return *running_; }
  WarpState& warp_of(const Fiber& f) { return warps_[f.ctx.warp]; }
  Fiber& fiber(unsigned linear_tid) { return *fibers_[linear_tid]; }
  const Fiber& fiber(unsigned linear_tid) const { return *fibers_[linear_tid]; }
  int barrier(BarrierKind kind, int predicate, Site site);
  void collective_arrive(const CollectiveOp& op, uint32_t mask, void* args, Site site);  // collectives.cpp
  uint32_t active_mask(Site site);
  void complete_collective(WarpState& w, unsigned index, unsigned warp_index);
  void block_running(WaitKind wait, Site site, const char* name, uint32_t mask);  // returns when woken
  void wake(Fiber& f) { f.state = FiberState::kRunnable; }
  [[noreturn]] void fail(const Fiber& f, const std::string& what);
  [[noreturn]] void exit_running();
  void yield_running();
  void count_collective() { ++stats_.collectives; }

  // ---- fault handling (signal handler) ----
  bool in_fiber() const { return running_ != nullptr; }
  bool smem_guard_contains(const void* addr) const;
  [[noreturn]] void fault_running(FaultKind kind, const void* addr);

  unsigned char* smem_base() const { return smem_base_; }
  size_t smem_bytes() const { return smem_bytes_; }

  // ---- sm_90 asynchronous units (async_proxy.cpp, mbarrier.cpp, tma.cpp, wgmma.cpp) ----
  unsigned num_threads() const { return num_threads_; }
  unsigned num_warps() const { return num_warps_; }
  AsyncUnits& async_units() { return async_; }
  const AsyncUnits& async_units() const { return async_; }
  // The async proxy's view of dynamic shared memory: TMA writes both views, fence.proxy.async copies the generic
  // view into it, and wgmma / TMA stores read it (and compare it with the generic view).
  unsigned char* smem_shadow() const { return smem_shadow_; }
  void publish_smem();
  void async_thread_exit(Fiber& f);           // at thread exit: unwaited wgmmas fail, TMA stores complete
  std::string describe_async_waits() const;  // mbarrier / wgmma / named-barrier waits, for deadlock reports
  void check_async_at_block_end();           // TMA loads still in flight when the block ends fail
  // When no thread can run, the async units make progress: threads waiting on an mbarrier with TMA loads in flight
  // (they perform the loads) or in wgmma.wait_group for fully issued wgmmas (they complete them) are woken.
  // So copies land and wgmmas complete as late as possible, which is what exposes early reads and reuse.
  bool run_async_units();

 private:
  static void fiber_entry(void* fiber);
  void prepare(const LaunchSpec& spec, uint3 block_idx);
  void ensure_fibers(unsigned count, size_t stack_bytes);
  void prepare_smem(size_t bytes);
  void resume(Fiber& f);
  bool resolve_activemasks();
  std::string describe_wait(const Fiber& f) const;

  const LaunchSpec* spec_ = nullptr;
  uint3 block_idx_{0, 0, 0};
  unsigned num_threads_ = 0;
  unsigned num_warps_ = 0;
  unsigned num_exited_ = 0;
  std::vector<std::unique_ptr<Fiber>> fibers_;
  size_t fiber_stack_bytes_ = 0;
  WarpState warps_[kMaxWarps];
  std::vector<uint32_t> order_;
  uint64_t rng_ = 0;  // the random thread order's state
  ClusterState* cluster_ = nullptr;
  unsigned cluster_rank_ = 0;

  // block barrier
  unsigned barrier_arrived_ = 0;
  Site barrier_site_{nullptr, 0};
  BarrierKind barrier_kind_ = BarrierKind::kPlain;
  int barrier_count_ = 0;
  int barrier_result_ = 0;

  // dynamic shared memory: [unused | smem_bytes_ | guard page]
  char* smem_mapping_ = nullptr;
  size_t smem_mapping_bytes_ = 0;
  char* smem_guard_ = nullptr;
  unsigned char* smem_base_ = nullptr;
  size_t smem_bytes_ = 0;
  char* shadow_mapping_ = nullptr;  // same geometry as the smem arena, no guard page
  unsigned char* smem_shadow_ = nullptr;
  AsyncUnits async_;

  MachineContext scheduler_;
  Fiber* running_ = nullptr;
  bool failed_ = false;
  const Fiber* failed_fiber_ = nullptr;
  std::string failure_;
  Fault fault_;
  BlockStats stats_;
};

// The first `count` runners of this OS thread (created on first use: one per block of a cluster) and the one
// currently running a block here, if any.
std::vector<BlockRunner*> this_thread_runners(unsigned count);
BlockRunner* active_runner();
void set_active_runner(BlockRunner* runner);

// "block (x, y, z), thread (x, y, z) (warp w, lane l)"
std::string describe_thread(const ThreadCtx& ctx);
std::string lane_list(uint32_t mask);  // "0-15, 17"
std::string site_str(Site site);       // "file.cu:123"
std::string hex_mask(uint32_t mask);   // "0x0000ffff"

}  // namespace q35::simt
