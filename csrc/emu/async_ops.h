// Internal helpers shared by the sm_90 units of the emulator (async_proxy.cpp, mbarrier.cpp, tma.cpp, wgmma.cpp,
// warpgroup_ops.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "emu/block_runner.h"
#include "q35/emu/control.h"

namespace q35::simt {

// The runner of the calling kernel thread; an error if the emulated architecture is older than sm_90.
BlockRunner& sm90_runner(const char* what, Site site);
BlockRunner& kernel_runner(const char* what);  // any architecture
[[noreturn]] void async_error(const std::string& what, Site site);

// Shared address of [p, p + bytes) in dynamic shared memory, or an error naming `what`.
uint32_t checked_shared_address(BlockRunner& r, const void* p, uint64_t bytes, const char* what, Site site);

// cluster.cpp: the block of cluster rank `cta_rank` in r's cluster, or an error naming `what`.
BlockRunner& cluster_peer(BlockRunner& r, uint32_t cta_rank, const char* what, Site site);
std::string describe_cluster_barrier_waits(const BlockRunner& r);

// mbarrier.cpp
MbarrierState& lookup_barrier(BlockRunner& r, const uint64_t* bar, const char* what, Site site);
void complete_tx(BlockRunner& r, MbarrierState& b, uint64_t bytes);
std::string describe_barrier(const MbarrierState& b);
std::string describe_mbarrier_waits(const BlockRunner& r);

// tma.cpp
void perform_loads_for(BlockRunner& r, const uint64_t* bar);  // the loads in flight that complete `bar`
void perform_thread_stores(BlockRunner& r, Fiber& f, size_t upto);  // this thread's stores [done, upto)
std::string describe_tma_loads(const BlockRunner& r);

// wgmma.cpp
std::string describe_wgmma_waits(const BlockRunner& r);
// warpgroup_ops.cpp
std::string describe_named_barrier_waits(const BlockRunner& r);

// "0-31, 64" for a sorted list of thread indices.
std::string thread_ranges(const std::vector<unsigned>& tids);
std::string hex_addr(const void* p);  // "smem+<shared address>" in dynamic shared memory, else "0x..."

}  // namespace q35::simt
