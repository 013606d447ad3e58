// Runs one thread block: fibers, the scheduler loop, the block barrier, thread exit and the error reports.
// Warp collectives are in collectives.cpp; the grid loop in grid.cpp.
#include "emu/block_runner.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "emu/faults.h"
#include "emu/symbols.h"
#include "q35/emu/control.h"

namespace q35::simt {
namespace {

constexpr size_t kStackGuardBytes = 64 * 1024;
constexpr size_t kSmemArenaBytes = 227 * 1024;  // the largest per-block dynamic smem of any emulated arch
constexpr unsigned char kSmemPoison = 0xFF;      // every float/half/bf16 read of unwritten smem is a NaN
constexpr unsigned kSmemAlign = 16;

thread_local BlockRunner* t_active = nullptr;
thread_local Fiber* t_fiber = nullptr;
thread_local std::vector<std::unique_ptr<BlockRunner>> t_runners;

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

bool same_site(Site a, Site b) {
  return a.line == b.line && (a.file == b.file || (a.file && b.file && std::strcmp(a.file, b.file) == 0));
}

const char* barrier_name(BarrierKind k) {
  switch (k) {
    case BarrierKind::kPlain:
      return "__syncthreads()";
    case BarrierKind::kCount:
      return "__syncthreads_count()";
    case BarrierKind::kAnd:
      return "__syncthreads_and()";
    case BarrierKind::kOr:
      return "__syncthreads_or()";
  }
  return "__syncthreads()";
}

}  // namespace

std::string site_str(Site s) {
  if (!s.file) return "<unknown>";
  const char* base = std::strrchr(s.file, '/');
  return std::string(base ? base + 1 : s.file) + ":" + std::to_string(s.line);
}

std::string hex_mask(uint32_t m) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", m);
  return buf;
}

ThreadCtx* current_thread() { return t_fiber ? &t_fiber->ctx : nullptr; }
BlockRunner* active_runner() { return t_active; }
void set_active_runner(BlockRunner* runner) { t_active = runner; }
std::vector<BlockRunner*> this_thread_runners(unsigned count) {
  while (t_runners.size() < count) t_runners.push_back(std::make_unique<BlockRunner>());
  std::vector<BlockRunner*> out;
  for (unsigned i = 0; i < count; ++i) out.push_back(t_runners[i].get());
  return out;
}

std::string lane_list(uint32_t mask) {
  std::string out;
  for (int i = 0; i < 32;) {
    if (!(mask >> i & 1u)) {
      ++i;
      continue;
    }
    int j = i;
    while (j + 1 < 32 && (mask >> (j + 1) & 1u)) ++j;
    if (!out.empty()) out += ", ";
    out += j == i ? std::to_string(i) : std::to_string(i) + "-" + std::to_string(j);
    i = j + 1;
  }
  return out.empty() ? "none" : out;
}

std::string describe_thread(const ThreadCtx& c) {
  using std::to_string;
  return "block (" + to_string(c.block_idx.x) + ", " + to_string(c.block_idx.y) + ", " + to_string(c.block_idx.z) +
         "), thread (" + to_string(c.thread_idx.x) + ", " + to_string(c.thread_idx.y) + ", " +
         to_string(c.thread_idx.z) + ") (warp " + to_string(c.warp) + ", lane " + to_string(c.lane) + ")";
}

BlockRunner::BlockRunner() {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  smem_mapping_bytes_ = (kSmemArenaBytes + page - 1) / page * page + page;
  void* p = mmap(nullptr, smem_mapping_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw Error("qwen35_native emulator: cannot map the shared-memory arena");
  smem_mapping_ = static_cast<char*>(p);
  smem_guard_ = smem_mapping_ + smem_mapping_bytes_ - page;
  if (mprotect(smem_guard_, page, PROT_NONE) != 0) throw Error("qwen35_native emulator: cannot protect smem guard");
  p = mmap(nullptr, smem_mapping_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw Error("qwen35_native emulator: cannot map the async-proxy shared-memory view");
  shadow_mapping_ = static_cast<char*>(p);
  for (auto& w : warps_) w.num_pending = 0;
}

BlockRunner::~BlockRunner() {
  for (auto& f : fibers_) free_stack(f->stack);
  if (smem_mapping_) munmap(smem_mapping_, smem_mapping_bytes_);
  if (shadow_mapping_) munmap(shadow_mapping_, smem_mapping_bytes_);
}

bool BlockRunner::smem_guard_contains(const void* addr) const {
  auto a = reinterpret_cast<uintptr_t>(addr);
  auto g = reinterpret_cast<uintptr_t>(smem_guard_);
  return a >= g && a < g + static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
}

BlockStats BlockRunner::take_stats() {
  BlockStats s = stats_;
  stats_ = BlockStats{};
  return s;
}

void BlockRunner::ensure_fibers(unsigned count, size_t stack_bytes) {
  if (stack_bytes != fiber_stack_bytes_) {
    for (auto& f : fibers_) free_stack(f->stack);
    fibers_.clear();
    fiber_stack_bytes_ = stack_bytes;
  }
  while (fibers_.size() < count) {
    auto f = std::make_unique<Fiber>();
    f->stack = allocate_stack(stack_bytes, kStackGuardBytes);
    fibers_.push_back(std::move(f));
  }
}

void BlockRunner::prepare_smem(size_t bytes) {
  const size_t rounded = (bytes + kSmemAlign - 1) / kSmemAlign * kSmemAlign;
  smem_bytes_ = bytes;
  smem_base_ = reinterpret_cast<unsigned char*>(smem_guard_ - rounded);
  std::memset(smem_base_, kSmemPoison, rounded);
  const ptrdiff_t offset = smem_base_ - reinterpret_cast<unsigned char*>(smem_mapping_);
  smem_shadow_ = reinterpret_cast<unsigned char*>(shadow_mapping_) + offset;
  std::memset(smem_shadow_, kSmemPoison, rounded);
}

void BlockRunner::prepare(const LaunchSpec& spec, uint3 block_idx) {
  const dim3 cd = spec.cluster;
  const uint3 cta{block_idx.x % cd.x, block_idx.y % cd.y, block_idx.z % cd.z};
  spec_ = &spec;
  block_idx_ = block_idx;
  num_threads_ = spec.block.x * spec.block.y * spec.block.z;
  num_warps_ = (num_threads_ + kWarpLanes - 1) / kWarpLanes;
  num_exited_ = 0;
  barrier_arrived_ = 0;
  failed_ = false;
  failed_fiber_ = nullptr;
  failure_.clear();
  fault_.kind = 0;
  prepare_smem(spec.dynamic_smem_bytes);
  for (unsigned w = 0; w < num_warps_; ++w) {
    const unsigned lanes = std::min(kWarpLanes, num_threads_ - w * kWarpLanes);
    warps_[w].present = lanes == kWarpLanes ? ~0u : (1u << lanes) - 1u;
    warps_[w].exited = 0;
    warps_[w].activemask_waiting = 0;
    warps_[w].num_pending = 0;
  }
  for (unsigned tid = 0; tid < num_threads_; ++tid) {
    Fiber& f = *fibers_[tid];
    ThreadCtx& c = f.ctx;
    c.thread_idx = uint3{tid % spec.block.x, (tid / spec.block.x) % spec.block.y, tid / (spec.block.x * spec.block.y)};
    c.block_idx = block_idx;
    c.block_dim = spec.block;
    c.grid_dim = spec.grid;
    c.linear_tid = tid;
    c.lane = tid % kWarpLanes;
    c.warp = tid / kWarpLanes;
    c.dyn_smem = smem_base_;
    c.cluster_dim = cd;
    c.cluster_ctaid = cta;
    c.cluster_rank = cta.x + cd.x * (cta.y + cd.y * cta.z);
    f.state = FiberState::kRunnable;
    f.wait = WaitKind::kNone;
    f.cp_async.reset();
    f.async.reset();
    make_context(f.machine, f.stack, &BlockRunner::fiber_entry, &f);
  }
}

void BlockRunner::begin(const LaunchSpec& spec, uint3 block_idx, const Schedule& schedule, uint64_t block_seq,
                        size_t stack_bytes, int arch_sm, ClusterState* cluster, unsigned cluster_rank) {
  ensure_fibers(spec.block.x * spec.block.y * spec.block.z, stack_bytes);
  prepare(spec, block_idx);
  async_.reset(arch_sm);
  cluster_ = cluster;
  cluster_rank_ = cluster_rank;
  order_.resize(num_threads_);
  std::iota(order_.begin(), order_.end(), 0u);
  if (schedule.order == Order::kReverse) std::reverse(order_.begin(), order_.end());
  rng_ = schedule.seed * 0x2545F4914F6CDD1Dull + block_seq;
}

bool BlockRunner::step_round(const Schedule& schedule) {
  if (schedule.order == Order::kRandom) {
    for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[splitmix64(rng_) % i]);
  }
  bool progressed = false;
  for (const uint32_t tid : order_) {
    Fiber& f = *fibers_[tid];
    if (f.state != FiberState::kRunnable) continue;
    resume(f);
    progressed = true;
    if (failed_) throw_error(failed_fiber_, failure_);
  }
  return progressed;
}

bool BlockRunner::unblock() { return resolve_activemasks() || run_async_units(); }

namespace {

// The deadlock of a whole cluster: every block's waits (one block: the block's own report).
[[noreturn]] void report_cluster_deadlock(ClusterState& cluster) {
  const Fiber* blame = nullptr;
  BlockRunner* owner = nullptr;
  bool inconsistent = false;
  std::string details;
  const bool many = cluster.ctas.size() > 1;
  for (unsigned r = 0; r < cluster.ctas.size(); ++r) {
    BlockRunner& b = *cluster.ctas[r];
    if (b.done()) continue;
    const Fiber* first = nullptr;
    const std::string d = b.deadlock_details(first, inconsistent);
    if (!blame && first) {
      blame = first;
      owner = &b;
    }
    details += many ? "\n    block of cluster rank " + std::to_string(r) + ":" + d : d;
  }
  if (cluster.barrier_arrived > 0) {
    details += "\n    " + std::to_string(cluster.barrier_arrived) + " of " + std::to_string(cluster.threads) +
               " threads of the cluster arrived at barrier.cluster";
  }
  if (!owner) owner = cluster.ctas.front();
  set_active_runner(owner);
  owner->throw_error(blame, std::string(inconsistent ? "deadlock (inconsistent warp-collective masks)" : "deadlock") +
                                (many ? ": no thread of the cluster can proceed" : ": no thread of the block can proceed") +
                                details);
}

}  // namespace

void run_cluster(const LaunchSpec& spec, ClusterState& cluster, const uint3* block_idx, const uint64_t* block_seq,
                 const Schedule& schedule, size_t stack_bytes, int arch_sm) {
  const unsigned n = static_cast<unsigned>(cluster.ctas.size());
  struct Deactivate {
    ~Deactivate() { set_active_runner(nullptr); }
  } deactivate;
  cluster.threads = 0;
  cluster.barrier_arrived = 0;
  cluster.barrier_phase = 0;
  for (unsigned r = 0; r < n; ++r) {
    cluster.ctas[r]->begin(spec, block_idx[r], schedule, block_seq[r], stack_bytes, arch_sm, &cluster, r);
    cluster.threads += cluster.ctas[r]->num_threads();
  }
  // the blocks of a cluster take turns in the thread order's order
  std::vector<unsigned> order(n);
  std::iota(order.begin(), order.end(), 0u);
  if (schedule.order == Order::kReverse) std::reverse(order.begin(), order.end());
  uint64_t rng = schedule.seed * 0x9E3779B97F4A7C15ull + block_seq[0];
  for (;;) {
    if (schedule.order == Order::kRandom) {
      for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[splitmix64(rng) % i]);
    }
    bool progressed = false, all_done = true;
    for (const unsigned r : order) {  // each block runs until none of its threads can, before the next one: the
      BlockRunner& b = *cluster.ctas[r];  // blocks drift as far apart as the kernel's synchronisation allows
      if (b.done()) continue;
      set_active_runner(&b);
      while (!b.done() && b.step_round(schedule)) progressed = true;
      all_done = all_done && b.done();
    }
    if (all_done) break;
    if (progressed) continue;
    bool unblocked = false;
    for (const unsigned r : order) {
      BlockRunner& b = *cluster.ctas[r];
      if (unblocked || b.done()) continue;
      set_active_runner(&b);
      unblocked = b.unblock();
    }
    if (!unblocked) report_cluster_deadlock(cluster);
  }
  for (const unsigned r : order) {
    set_active_runner(cluster.ctas[r]);
    cluster.ctas[r]->check_async_at_block_end();
  }
}

void BlockRunner::resume(Fiber& f) {
  running_ = &f;
  t_fiber = &f;
  ++stats_.switches;
  switch_context(scheduler_, f.machine);
  running_ = nullptr;
  t_fiber = nullptr;
  if (fault_.kind != 0) {
    failed_ = true;
    failed_fiber_ = &f;
    failure_ = describe_fault(static_cast<FaultKind>(fault_.kind), fault_.address, *this, f);
    fault_.kind = 0;
  }
}

void BlockRunner::fiber_entry(void* arg) {
  BlockRunner* self = active_runner();
  (void)arg;
  try {
    self->spec_->invoke(self->spec_->kernel, self->spec_->params);
  } catch (const std::exception& e) {
    self->fail(self->running(), std::string("C++ exception in the kernel: ") + e.what());
  } catch (...) {
    self->fail(self->running(), "unknown C++ exception in the kernel");
  }
  self->exit_running();
}

void BlockRunner::block_running(WaitKind wait, Site site, const char* name, uint32_t mask) {
  Fiber& f = *running_;
  f.state = FiberState::kBlocked;
  f.wait = wait;
  f.wait_site = site;
  f.wait_name = name;
  f.wait_mask = mask;
  switch_context(f.machine, scheduler_);
  f.wait = WaitKind::kNone;
}

void BlockRunner::yield_running() { switch_context(running_->machine, scheduler_); }

void BlockRunner::fail(const Fiber& f, const std::string& what) {
  failed_ = true;
  failed_fiber_ = &f;
  failure_ = what;
  switch_context(running_->machine, scheduler_);
  __builtin_trap();  // a failed block is never resumed
}

void BlockRunner::fault_running(FaultKind kind, const void* addr) {
  fault_.address = addr;
  fault_.kind = static_cast<int>(kind);
  jump_context(scheduler_);
}

int BlockRunner::barrier(BarrierKind kind, int predicate, Site site) {
  Fiber& f = *running_;
  if (num_exited_ > 0) {
    std::vector<unsigned> gone;
    for (unsigned t = 0; t < num_threads_; ++t)
      if (fibers_[t]->state == FiberState::kExited) gone.push_back(t);
    fail(f, std::string("barrier divergence: ") + barrier_name(kind) + " at " + site_str(site) + " reached after " +
                std::to_string(gone.size()) + " thread(s) of the block exited (first: linear thread " +
                std::to_string(gone.front()) + ")");
  }
  if (barrier_arrived_ == 0) {
    barrier_site_ = site;
    barrier_kind_ = kind;
    barrier_count_ = 0;
  } else if (kind != barrier_kind_ || !same_site(site, barrier_site_)) {
    fail(f, std::string("barrier divergence: this thread reached ") + barrier_name(kind) + " at " + site_str(site) +
                " while " + std::to_string(barrier_arrived_) + " thread(s) wait at " + barrier_name(barrier_kind_) +
                " at " + site_str(barrier_site_));
  }
  barrier_count_ += predicate != 0;
  if (++barrier_arrived_ == num_threads_) {
    const int n = static_cast<int>(num_threads_);
    switch (barrier_kind_) {
      case BarrierKind::kPlain:
        barrier_result_ = 0;
        break;
      case BarrierKind::kCount:
        barrier_result_ = barrier_count_;
        break;
      case BarrierKind::kAnd:
        barrier_result_ = barrier_count_ == n;
        break;
      case BarrierKind::kOr:
        barrier_result_ = barrier_count_ > 0;
        break;
    }
    barrier_arrived_ = 0;
    ++stats_.barriers;
    for (unsigned t = 0; t < num_threads_; ++t) {
      Fiber& g = *fibers_[t];
      if (g.state == FiberState::kBlocked && g.wait == WaitKind::kBarrier) wake(g);
    }
    return barrier_result_;
  }
  block_running(WaitKind::kBarrier, site, barrier_name(kind), 0);
  return barrier_result_;
}

void BlockRunner::exit_running() {
  Fiber& f = *running_;
  f.cp_async.drain();
  async_thread_exit(f);
  WarpState& w = warps_[f.ctx.warp];
  const uint32_t bit = 1u << f.ctx.lane;
  w.exited |= bit;
  ++num_exited_;
  if (barrier_arrived_ > 0) {
    fail(f, "barrier divergence: this thread exited while " + std::to_string(barrier_arrived_) +
                " thread(s) wait at " + barrier_name(barrier_kind_) + " at " + site_str(barrier_site_));
  }
  for (unsigned i = 0; i < w.num_pending;) {
    Collective& c = w.pending[i];
    if (!(c.mask & bit)) {
      ++i;
      continue;
    }
    if (!c.op->exited_lanes_allowed) {
      fail(f, "this lane exited while lanes " + lane_list(c.arrived) + " wait for it in " + c.op->name +
                  "(mask=" + hex_mask(c.mask) + ") at " + site_str(c.site));
    }
    const uint32_t need = c.mask & w.present & ~w.exited;
    if ((c.arrived & need) == need) {
      complete_collective(w, i, f.ctx.warp);  // moves another collective into slot i
    } else {
      ++i;
    }
  }
  f.state = FiberState::kExited;
  switch_context(f.machine, scheduler_);
  __builtin_trap();  // an exited fiber is never resumed
}

bool BlockRunner::resolve_activemasks() {
  bool any = false;
  for (unsigned wi = 0; wi < num_warps_; ++wi) {
    WarpState& w = warps_[wi];
    uint32_t waiting = w.activemask_waiting;
    while (waiting) {
      const unsigned first = static_cast<unsigned>(__builtin_ctz(waiting));
      const Site site = fibers_[wi * kWarpLanes + first]->wait_site;
      uint32_t group = 0;
      for (uint32_t m = waiting; m; m &= m - 1) {
        const unsigned l = static_cast<unsigned>(__builtin_ctz(m));
        if (same_site(fibers_[wi * kWarpLanes + l]->wait_site, site)) group |= 1u << l;
      }
      for (uint32_t m = group; m; m &= m - 1) {
        Fiber& g = *fibers_[wi * kWarpLanes + static_cast<unsigned>(__builtin_ctz(m))];
        g.activemask_result = group;
        wake(g);
      }
      waiting &= ~group;
      any = true;
    }
    w.activemask_waiting = 0;
  }
  return any;
}

std::string BlockRunner::describe_wait(const Fiber& f) const {
  switch (f.state) {
    case FiberState::kExited:
      return "exited";
    case FiberState::kRunnable:
      return "runnable";
    case FiberState::kBlocked:
      break;
  }
  std::string s = std::string("waiting in ") + (f.wait_name ? f.wait_name : "?");
  if (f.wait == WaitKind::kCollective) s += "(mask=" + hex_mask(f.wait_mask) + ")";
  return s + " at " + site_str(f.wait_site);
}

std::string BlockRunner::deadlock_details(const Fiber*& blame, bool& inconsistent) const {
  using std::to_string;
  std::string details;
  if (barrier_arrived_ > 0) {
    details += "\n    " + to_string(barrier_arrived_) + " of " + to_string(num_threads_) + " threads wait at " +
               barrier_name(barrier_kind_) + " at " + site_str(barrier_site_);
  }
  for (unsigned wi = 0; wi < num_warps_; ++wi) {
    const WarpState& w = warps_[wi];
    for (unsigned i = 0; i < w.num_pending; ++i) {
      const Collective& c = w.pending[i];
      const Fiber& first = *fibers_[wi * kWarpLanes + static_cast<unsigned>(__builtin_ctz(c.arrived))];
      if (!blame) blame = &first;
      details += "\n    warp " + to_string(wi) + ": lanes " + lane_list(c.arrived) + " wait in " + c.op->name +
                 "(mask=" + hex_mask(c.mask) + ") at " + site_str(c.site) + " for lanes " +
                 lane_list(c.mask & ~c.arrived);
      for (uint32_t miss = c.mask & ~c.arrived; miss; miss &= miss - 1) {
        const Fiber& g = *fibers_[wi * kWarpLanes + static_cast<unsigned>(__builtin_ctz(miss))];
        details += "\n      lane " + to_string(g.ctx.lane) + ": " + describe_wait(g);
        if (g.wait == WaitKind::kCollective && g.wait_mask != c.mask) inconsistent = true;
      }
    }
  }
  details += describe_async_waits();
  if (!blame) {
    for (unsigned t = 0; t < num_threads_ && !blame; ++t)
      if (fibers_[t]->state == FiberState::kBlocked) blame = fibers_[t].get();
  }
  return details;
}

void BlockRunner::throw_error(const Fiber* f, const std::string& what) {
  using std::to_string;
  std::string m = "qwen35_native emulator: " + what + "\n  kernel: " + kernel_name(spec_->kernel) + "\n  at: ";
  m += f ? describe_thread(f->ctx)
         : "block (" + to_string(block_idx_.x) + ", " + to_string(block_idx_.y) + ", " + to_string(block_idx_.z) + ")";
  m += "\n  launched from: " + std::string(spec_->launched_from.function_name()) + " (" +
       site_str(Site{spec_->launched_from.file_name(), static_cast<int>(spec_->launched_from.line())}) + ")";
  failed_ = false;
  throw Error(m);
}

// ---- entry points called by kernel code (q35/emu/runtime.h) ----

int block_barrier(BarrierKind kind, int predicate, Site site) {
  return active_runner()->barrier(kind, predicate, site);
}

void kernel_error(const char* what, Site site) {
  BlockRunner* r = active_runner();
  if (!r || !r->in_fiber()) throw Error(std::string("qwen35_native emulator: ") + what + " outside a kernel");
  r->fail(r->running(), std::string(what) + " at " + site_str(site));
}

}  // namespace q35::simt
