// mbarrier on the emulator. The state (expected and pending arrivals, tx-count, phase) lives in a per-block table
// keyed by address; the 8 bytes in shared memory hold a witness of it, so an ordinary store over a live barrier
// is an error. A phase completes when its pending arrivals and its tx-count both reach zero. try_wait.parity
// returns at once for the other parity (the preceding phase, complete by definition); for the current phase it
// first performs the TMA loads in flight on this barrier, then blocks the thread until the phase completes.
#include <string>
#include <vector>

#include "emu/async_ops.h"

namespace q35::simt {
namespace {

constexpr uint32_t kMaxCount = (1u << 20) - 1;  // arrival counts and tx-counts are 20-bit
constexpr int64_t kMaxTx = (int64_t{1} << 20) - 1;
constexpr uint64_t kWitnessMagic = 0x4D42'4152'0000'0000ull;  // "MBAR"

void store_witness(MbarrierState& b) {
  b.witness = kWitnessMagic ^ (uint64_t{b.phase} << 40) ^ (uint64_t{b.pending} << 20) ^
              static_cast<uint64_t>(b.tx & kMaxTx) ^ (static_cast<uint64_t>(b.tx < 0) << 39);
  *b.addr = b.witness;
}

void check_alignment(const uint64_t* bar, const char* what, Site site) {
  if (reinterpret_cast<uintptr_t>(bar) % sizeof(uint64_t) != 0)
    async_error(std::string(what) + ": the mbarrier address " + hex_addr(bar) + " is not 8-byte aligned", site);
}

void complete_phase(BlockRunner& r, MbarrierState& b) {
  ++b.phase;
  b.pending = b.expected;
  b.tx = 0;
  store_witness(b);
  for (unsigned t = 0; t < r.num_threads(); ++t) {
    Fiber& f = r.fiber(t);
    if (f.state == FiberState::kBlocked && f.wait == WaitKind::kMbarrier && f.async.wait_bar == b.addr) r.wake(f);
  }
}

void maybe_complete(BlockRunner& r, MbarrierState& b) {
  if (b.pending == 0 && b.tx == 0) complete_phase(r, b);
}

void add_tx(MbarrierState& b, int64_t delta, const char* what, Site site) {
  b.tx += delta;
  if (b.tx > kMaxTx || b.tx < -kMaxTx)
    async_error(std::string(what) + ": the tx-count of mbarrier " + hex_addr(b.addr) + " left the 20-bit range (" +
                    std::to_string(b.tx) + " bytes)",
                site);
}

}  // namespace

MbarrierState& lookup_barrier(BlockRunner& r, const uint64_t* bar, const char* what, Site site) {
  check_alignment(bar, what, site);
  MbarrierState* b = r.async_units().find_barrier(bar);
  BlockRunner* self = active_runner();
  if (!b && self && self != &r) {  // a peer's barrier (cluster scope)
    async_error(std::string(what) + " on the mbarrier of cluster rank " + std::to_string(r.cluster_rank()) +
                    " at its shared address " + std::to_string(reinterpret_cast<const unsigned char*>(bar) -
                                                               r.smem_base()) +
                    ", which that block has not initialised (yet: a cluster barrier between the peers' "
                    "mbarrier.init and the first signal or multicast to them)",
                site);
  }
  if (!b) {
    async_error(std::string(what) + " on " + hex_addr(bar) +
                    ", which holds no mbarrier of this block (mbarrier.init it first; an invalidated barrier "
                    "must be initialised again)",
                site);
  }
  if (*bar != b->witness) {
    async_error(std::string(what) + ": the mbarrier at " + hex_addr(bar) + " (initialised at " +
                    site_str(b->init_site) + ") was overwritten by an ordinary store (mbarrier.inval before "
                    "reusing its memory)",
                site);
  }
  return *b;
}

void complete_tx(BlockRunner& r, MbarrierState& b, uint64_t bytes) {
  b.tx -= static_cast<int64_t>(bytes);
  store_witness(b);
  maybe_complete(r, b);
}

std::string describe_barrier(const MbarrierState& b) {
  return "mbarrier " + hex_addr(b.addr) + " (init at " + site_str(b.init_site) + ", count " +
         std::to_string(b.expected) + "): phase " + std::to_string(b.phase) + " (parity " +
         std::to_string(b.phase & 1) + ") waits for " + std::to_string(b.pending) + " arrival(s) and tx-count " +
         std::to_string(b.tx);
}

std::string describe_mbarrier_waits(const BlockRunner& r) {
  std::string out;
  for (const MbarrierState& b : r.async_units().barriers) {
    std::vector<unsigned> waiting[2];
    Site site{nullptr, 0};
    for (unsigned t = 0; t < r.num_threads(); ++t) {
      const Fiber& f = r.fiber(t);
      if (f.state != FiberState::kBlocked || f.wait != WaitKind::kMbarrier || f.async.wait_bar != b.addr) continue;
      waiting[f.async.wait_parity & 1].push_back(t);
      site = f.wait_site;
    }
    if (waiting[0].empty() && waiting[1].empty()) continue;
    out += "\n    " + describe_barrier(b);
    for (int p = 0; p < 2; ++p) {
      if (!waiting[p].empty())
        out += "\n      threads " + thread_ranges(waiting[p]) + " wait for parity " + std::to_string(p) + " at " +
               site_str(site);
    }
  }
  return out;
}

void mbarrier_init(uint64_t* bar, uint32_t count, Site site) {
  BlockRunner& r = sm90_runner("mbarrier.init", site);
  check_alignment(bar, "mbarrier.init", site);
  if (count < 1 || count > kMaxCount)
    async_error("mbarrier.init: count must be in [1, 2^20 - 1], got " + std::to_string(count), site);
  AsyncUnits& u = r.async_units();
  MbarrierState* b = u.find_barrier(bar);
  if (b) {
    for (const TmaCopy& ld : u.loads) {
      if (ld.bar == bar)
        async_error("mbarrier.init on a live mbarrier with a TMA load in flight (issued at " + site_str(ld.site) + ")",
                    site);
    }
  } else {
    u.barriers.emplace_back();
    b = &u.barriers.back();
  }
  *b = MbarrierState{};
  b->addr = bar;
  b->expected = b->pending = count;
  b->init_tid = r.running().ctx.linear_tid;
  b->init_site = site;
  store_witness(*b);
}

void mbarrier_inval(uint64_t* bar, Site site) {
  BlockRunner& r = sm90_runner("mbarrier.inval", site);
  MbarrierState& b = lookup_barrier(r, bar, "mbarrier.inval", site);
  AsyncUnits& u = r.async_units();
  for (const TmaCopy& ld : u.loads)
    if (ld.bar == bar)
      async_error("mbarrier.inval with a TMA load in flight (issued at " + site_str(ld.site) + ")", site);
  for (unsigned t = 0; t < r.num_threads(); ++t) {
    const Fiber& f = r.fiber(t);
    if (f.state == FiberState::kBlocked && f.wait == WaitKind::kMbarrier && f.async.wait_bar == bar)
      async_error("mbarrier.inval while thread " + std::to_string(t) + " waits on it", site);
  }
  u.barriers.erase(u.barriers.begin() + (&b - u.barriers.data()));
}

void mbarrier_expect_tx(uint64_t* bar, uint32_t tx_bytes, Site site) {
  BlockRunner& r = sm90_runner("mbarrier.expect_tx", site);
  MbarrierState& b = lookup_barrier(r, bar, "mbarrier.expect_tx", site);
  add_tx(b, tx_bytes, "mbarrier.expect_tx", site);
  store_witness(b);
}

namespace {

// One arrival (after expect_tx(tx_bytes)) on barrier `bar` of block `r` (the running block, or a peer in its
// cluster).
void arrive_on(BlockRunner& r, uint64_t* bar, uint32_t tx_bytes, const char* what, Site site) {
  MbarrierState& b = lookup_barrier(r, bar, what, site);
  add_tx(b, tx_bytes, what, site);
  if (b.pending == 0) {
    async_error(std::string(what) + ": more arrivals in one phase than the count " + std::to_string(b.expected) +
                    " given to mbarrier.init (" + describe_barrier(b) + ")",
                site);
  }
  --b.pending;
  store_witness(b);
  maybe_complete(r, b);
}

}  // namespace

void mbarrier_arrive(uint64_t* bar, uint32_t tx_bytes, Site site) {
  const char* what = tx_bytes ? "mbarrier.arrive.expect_tx" : "mbarrier.arrive";
  arrive_on(sm90_runner(what, site), bar, tx_bytes, what, site);
}

void mbarrier_arrive_cluster(uint64_t* bar, uint32_t cta_rank, Site site) {
  constexpr const char* kWhat = "mbarrier.arrive.shared::cluster";
  BlockRunner& r = sm90_runner(kWhat, site);
  BlockRunner& peer = cluster_peer(r, cta_rank, kWhat, site);
  const uint32_t offset = checked_shared_address(r, bar, sizeof(uint64_t), kWhat, site);
  arrive_on(peer, reinterpret_cast<uint64_t*>(peer.smem_base() + offset), 0, kWhat, site);
}

bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity, Site site) {
  constexpr const char* kWhat = "mbarrier.try_wait.parity";
  BlockRunner& r = sm90_runner(kWhat, site);
  if (parity > 1) async_error(std::string(kWhat) + ": parity must be 0 or 1, got " + std::to_string(parity), site);
  Fiber& f = r.running();
  for (;;) {
    if ((lookup_barrier(r, bar, kWhat, site).phase & 1) != parity) return true;
    perform_loads_for(r, bar);
    if ((lookup_barrier(r, bar, kWhat, site).phase & 1) != parity) return true;
    f.async.wait_bar = bar;
    f.async.wait_parity = parity;
    // Woken when a phase of the barrier completes, or when no thread can run and TMA loads on it are in flight.
    r.block_running(WaitKind::kMbarrier, site, kWhat, 0);
    f.async.wait_bar = nullptr;
  }
}

}  // namespace q35::simt
