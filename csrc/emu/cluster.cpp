// Thread block clusters on the emulator: the cluster barrier and distributed shared memory (mapa). The blocks of
// a cluster run together on one OS thread (run_cluster, block_runner.cpp), each with its own shared memory, so a
// block's generic loads and stores reach a peer's shared memory directly, and waits on peers are scheduled like
// waits inside a block. The cluster-scope mbarrier arrival is in mbarrier.cpp, the multicast TMA load in tma.cpp.
#include <string>
#include <vector>

#include "emu/async_ops.h"

namespace q35::simt {

BlockRunner& cluster_peer(BlockRunner& r, uint32_t cta_rank, const char* what, Site site) {
  ClusterState& c = r.cluster();
  if (cta_rank >= c.ctas.size()) {
    async_error(std::string(what) + ": CTA rank " + std::to_string(cta_rank) + " is outside this cluster of " +
                    std::to_string(c.ctas.size()) + " block(s)",
                site);
  }
  return *c.ctas[cta_rank];
}

void cluster_arrive(Site site) {
  constexpr const char* kWhat = "barrier.cluster.arrive";
  BlockRunner& r = sm90_runner(kWhat, site);
  Fiber& f = r.running();
  ClusterState& c = r.cluster();
  if (f.async.cluster_arrived)
    async_error(std::string(kWhat) + " again before this thread's barrier.cluster.wait of the last one", site);
  f.async.cluster_arrived = true;
  f.async.cluster_phase = c.barrier_phase;
  if (++c.barrier_arrived < c.threads) return;
  c.barrier_arrived = 0;
  ++c.barrier_phase;
  for (BlockRunner* b : c.ctas) {
    for (unsigned t = 0; t < b->num_threads(); ++t) {
      Fiber& g = b->fiber(t);
      if (g.state == FiberState::kBlocked && g.wait == WaitKind::kClusterBarrier) b->wake(g);
    }
  }
}

void cluster_wait(Site site) {
  constexpr const char* kWhat = "barrier.cluster.wait";
  BlockRunner& r = sm90_runner(kWhat, site);
  Fiber& f = r.running();
  if (!f.async.cluster_arrived) async_error(std::string(kWhat) + " without a barrier.cluster.arrive before it", site);
  // Woken when the last thread of the cluster arrives (a thread that never arrives: a reported deadlock).
  while (r.cluster().barrier_phase == f.async.cluster_phase)
    r.block_running(WaitKind::kClusterBarrier, site, kWhat, 0);
  f.async.cluster_arrived = false;
}

void* map_shared_rank(const void* smem_ptr, uint32_t cta_rank, Site site) {
  constexpr const char* kWhat = "mapa (map_shared_rank)";
  BlockRunner& r = sm90_runner(kWhat, site);
  BlockRunner& peer = cluster_peer(r, cta_rank, kWhat, site);
  if (peer.done()) {  // on a GPU its shared memory may belong to another block by now
    async_error(std::string(kWhat) + ": block rank " + std::to_string(cta_rank) +
                    " of the cluster has exited, its shared memory with it (a cluster barrier before its exit, "
                    "after the peers' last access, is missing)",
                site);
  }
  return peer.smem_base() + checked_shared_address(r, smem_ptr, 0, kWhat, site);
}

std::string describe_cluster_barrier_waits(const BlockRunner& r) {
  std::vector<unsigned> waiting;
  Site site{nullptr, 0};
  for (unsigned t = 0; t < r.num_threads(); ++t) {
    const Fiber& f = r.fiber(t);
    if (f.state != FiberState::kBlocked || f.wait != WaitKind::kClusterBarrier) continue;
    waiting.push_back(t);
    site = f.wait_site;
  }
  if (waiting.empty()) return "";
  return "\n    threads " + thread_ranges(waiting) + " wait at barrier.cluster.wait at " + site_str(site);
}

}  // namespace q35::simt
