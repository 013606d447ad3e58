// The grid loop of the SIMT emulator: checks the launch against the emulated architecture's limits, orders the
// blocks (the thread order applies to blocks too), and runs whole blocks on this OS thread or on a pool of them.
#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "emu/block_runner.h"
#include "emu/faults.h"
#include "emu/symbols.h"
#include "q35/emu/control.h"

namespace q35::simt {
namespace {

constexpr unsigned kMaxBlockDimXY = 1024;
constexpr unsigned kMaxBlockDimZ = 64;
constexpr uint64_t kMaxGridDimX = (uint64_t{1} << 31) - 1;
constexpr unsigned kMaxGridDimYZ = 65535;
constexpr uint64_t kMaxShuffledBlocks = uint64_t{1} << 24;  // larger random grids rotate instead of shuffle
constexpr uint64_t kMaxClusterBlocks = 8;

[[noreturn]] void launch_error(const LaunchSpec& spec, const ArchLimits& arch, const std::string& what) {
  throw Error("qwen35_native emulator: invalid launch for sm_" + std::to_string(arch.sm) + ": " + what +
              "\n  kernel: " + kernel_name(spec.kernel) + "\n  launched from: " +
              spec.launched_from.function_name() + " (" +
              site_str(Site{spec.launched_from.file_name(), static_cast<int>(spec.launched_from.line())}) + ")");
}

std::string dims(dim3 d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

void validate(const LaunchSpec& spec, const ArchLimits& arch) {
  const dim3 b = spec.block, g = spec.grid;
  if (b.x == 0 || b.y == 0 || b.z == 0 || g.x == 0 || g.y == 0 || g.z == 0)
    launch_error(spec, arch, "grid " + dims(g) + " and block " + dims(b) + " must not be empty");
  const uint64_t threads = uint64_t{b.x} * b.y * b.z;
  if (b.x > kMaxBlockDimXY || b.y > kMaxBlockDimXY || b.z > kMaxBlockDimZ || threads > kMaxBlockThreads)
    launch_error(spec, arch, "block " + dims(b) + " has " + std::to_string(threads) +
                                 " threads; at most 1024 (x, y <= 1024, z <= 64)");
  if (g.x > kMaxGridDimX || g.y > kMaxGridDimYZ || g.z > kMaxGridDimYZ)
    launch_error(spec, arch, "grid " + dims(g) + " exceeds (2^31 - 1, 65535, 65535)");
  if (spec.dynamic_smem_bytes > arch.max_dynamic_smem)
    launch_error(spec, arch, "dynamic shared memory of " + std::to_string(spec.dynamic_smem_bytes) +
                                 " bytes exceeds the " + std::to_string(arch.max_dynamic_smem) + "-byte limit");
  const dim3 c = spec.cluster;
  const uint64_t cluster_blocks = uint64_t{c.x} * c.y * c.z;
  if (cluster_blocks == 1) return;
  if (c.x == 0 || c.y == 0 || c.z == 0)
    launch_error(spec, arch, "cluster " + dims(c) + " must not be empty");
  if (arch.sm < 90) launch_error(spec, arch, "thread block clusters need sm_90, got cluster " + dims(c));
  if (cluster_blocks > kMaxClusterBlocks)
    launch_error(spec, arch, "cluster " + dims(c) + " has " + std::to_string(cluster_blocks) +
                                 " blocks; at most 8 (the portable cluster size)");
  if (g.x % c.x != 0 || g.y % c.y != 0 || g.z % c.z != 0)
    launch_error(spec, arch, "grid " + dims(g) + " is not a multiple of the cluster " + dims(c));
}

uint3 block_coords(uint64_t linear, dim3 grid) {
  return uint3{static_cast<unsigned>(linear % grid.x), static_cast<unsigned>((linear / grid.x) % grid.y),
               static_cast<unsigned>(linear / (uint64_t{grid.x} * grid.y))};
}

uint64_t block_linear(uint3 b, dim3 grid) { return b.x + uint64_t{grid.x} * (b.y + uint64_t{grid.y} * b.z); }

dim3 cluster_grid(const LaunchSpec& spec) {
  return dim3(spec.grid.x / spec.cluster.x, spec.grid.y / spec.cluster.y, spec.grid.z / spec.cluster.z);
}

// The i-th block to run under `s`.
class BlockOrder {
 public:
  BlockOrder(uint64_t n, const Schedule& s) : n_(n), s_(s) {
    if (s.order != Order::kRandom) return;
    uint64_t state = s.seed ^ 0xD1B54A32D192ED03ull;
    auto next = [&state] {
      state += 0x9E3779B97F4A7C15ull;
      uint64_t z = state;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      return z ^ (z >> 31);
    };
    if (n <= kMaxShuffledBlocks) {
      perm_.resize(n);
      for (uint64_t i = 0; i < n; ++i) perm_[i] = static_cast<uint32_t>(i);
      for (uint64_t i = n; i > 1; --i) std::swap(perm_[i - 1], perm_[next() % i]);
    } else {
      rotation_ = next() % n;
    }
  }
  uint64_t at(uint64_t i) const {
    switch (s_.order) {
      case Order::kForward:
        return i;
      case Order::kReverse:
        return n_ - 1 - i;
      case Order::kRandom:
        return perm_.empty() ? (i + rotation_) % n_ : perm_[i];
    }
    return i;
  }

 private:
  uint64_t n_;
  Schedule s_;
  std::vector<uint32_t> perm_;
  uint64_t rotation_ = 0;
};

// Runs clusters [next, n) (of one block each without q35::launch_cluster) on the calling OS thread until done or
// failed; records the first error.
struct GridJob {
  const LaunchSpec* spec;
  const BlockOrder* order;
  Schedule schedule;
  size_t stack_bytes;
  int arch_sm;
  uint64_t num_clusters;
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::exception_ptr error;
  std::atomic<uint64_t> switches{0}, barriers{0}, collectives{0};

  void work() {
    ensure_alt_stack();
    const dim3 cd = spec->cluster;
    const unsigned size = cd.x * cd.y * cd.z;
    ClusterState cluster;
    cluster.ctas = this_thread_runners(size);
    std::vector<uint3> blocks(size);
    std::vector<uint64_t> seqs(size);
    try {
      for (uint64_t i = next++; i < num_clusters && !failed; i = next++) {
        const uint3 c = block_coords(order->at(i), cluster_grid(*spec));
        for (unsigned r = 0; r < size; ++r) {  // rank r = x + cd.x * (y + cd.y * z) within the cluster
          blocks[r] = uint3{c.x * cd.x + r % cd.x, c.y * cd.y + (r / cd.x) % cd.y, c.z * cd.z + r / (cd.x * cd.y)};
          seqs[r] = block_linear(blocks[r], spec->grid);
        }
        run_cluster(*spec, cluster, blocks.data(), seqs.data(), schedule, stack_bytes, arch_sm);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      failed = true;
    }
    for (BlockRunner* runner : cluster.ctas) {
      const BlockStats s = runner->take_stats();
      switches += s.switches;
      barriers += s.barriers;
      collectives += s.collectives;
    }
  }
};

// Persistent worker threads (each keeps its fibers and smem arena between launches).
class WorkerPool {
 public:
  static WorkerPool& instance() {
    static WorkerPool* pool = new WorkerPool();  // never destroyed: idle workers die with the process
    return *pool;
  }

  void run(GridJob& job, int extra_threads) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (static_cast<int>(workers_.size()) < extra_threads) workers_.emplace_back([this] { loop(); });
    job_ = &job;
    slots_ = extra_threads;
    finished_ = 0;
    ++generation_;
    work_cv_.notify_all();
    lock.unlock();
    job.work();
    lock.lock();
    done_cv_.wait(lock, [&] { return finished_ == extra_threads; });
    job_ = nullptr;
  }

 private:
  void loop() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      work_cv_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (slots_ <= 0 || !job_) continue;
      --slots_;
      GridJob* job = job_;
      lock.unlock();
      job->work();
      lock.lock();
      ++finished_;
      done_cv_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable work_cv_, done_cv_;
  std::vector<std::thread> workers_;
  GridJob* job_ = nullptr;
  int slots_ = 0;
  int finished_ = 0;
  uint64_t generation_ = 0;
};

std::mutex g_pool_mutex;  // one multi-threaded grid at a time

}  // namespace

void run_grid(const LaunchSpec& spec) {
  if (BlockRunner* r = active_runner(); r && r->in_fiber())
    throw Error("qwen35_native emulator: q35::launch called from inside an emulated kernel");
  const Settings settings = current_settings();
  validate(spec, settings.arch);
  ensure_fault_handlers();
  const uint64_t num_blocks = uint64_t{spec.grid.x} * spec.grid.y * spec.grid.z;
  const dim3 cg = cluster_grid(spec);
  const uint64_t num_clusters = uint64_t{cg.x} * cg.y * cg.z;
  const BlockOrder order(num_clusters, settings.schedule);
  GridJob job;
  job.spec = &spec;
  job.order = &order;
  job.schedule = settings.schedule;
  job.stack_bytes = settings.stack_bytes;
  job.arch_sm = settings.arch.sm;
  job.num_clusters = num_clusters;
  const uint64_t threads = std::min<uint64_t>(static_cast<uint64_t>(settings.os_threads), num_clusters);
  if (threads <= 1) {
    job.work();
  } else {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    WorkerPool::instance().run(job, static_cast<int>(threads) - 1);
  }
  add_stats(1, num_blocks, num_blocks * spec.block.x * spec.block.y * spec.block.z, job.switches, job.barriers,
            job.collectives);
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace q35::simt
