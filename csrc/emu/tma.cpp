// TMA tile copies (cp.async.bulk.tensor) on the emulator. A load poisons its destination box (0xFF in both views
// of shared memory) when it is issued and is performed when a thread waits on its mbarrier's current phase: a
// read of the box before that wait, or a wgmma still reading the box, sees NaNs. A store is performed by the
// bulk_wait_group that retires its group (or at thread exit), reading the async-proxy view of shared memory.
#include <cstring>
#include <string>

#include "emu/async_ops.h"
#include "q35/ptx/wgmma_layout.h"

namespace q35::simt {
namespace {

constexpr uint64_t kMaxDim = uint64_t{1} << 32;
constexpr uint64_t kMaxStride = uint64_t{1} << 40;
constexpr uint32_t kMaxBox = 256;
constexpr uint32_t kChunk = 16;           // swizzling permutes 16-byte chunks
constexpr uint32_t kSmemAlign = 128;      // TMA shared-memory boxes start on 128 bytes
constexpr unsigned char kPoison = 0xFF;
constexpr int64_t kInnerStartAlign = 16;  // bytes: where a box may start within a row (check_inner_start)

[[noreturn]] void map_error(const std::string& why) {
  throw Error("qwen35_native emulator: make_tensor_map: " + why);
}

uint64_t box_bytes(const TensorMapEmu& m) {
  uint64_t n = m.elem_bytes;
  for (uint32_t d = 0; d < m.rank; ++d) n *= m.box[d];
  return n;
}

void check_map(const TensorMapEmu* m, int rank, const char* what, Site site) {
  if (m->magic != kTensorMapMagic)
    async_error(std::string(what) + ": the tensor map was not built by make_tensor_map (or was overwritten)", site);
  if (static_cast<uint32_t>(rank) != m->rank)
    async_error(std::string(what) + ": a " + std::to_string(rank) + "D copy with a rank-" + std::to_string(m->rank) +
                    " tensor map",
                site);
}

uint32_t check_box(BlockRunner& r, const TensorMapEmu& m, const void* smem, const char* what, Site site) {
  const uint32_t addr = checked_shared_address(r, smem, box_bytes(m), what, site);
  const auto sw = static_cast<ptx::Swizzle>(m.swizzle);
  const uint32_t align = m.swizzle ? ptx::swizzle_repeat_bytes(sw) : kSmemAlign;
  if (addr % align != 0) {
    async_error(std::string(what) + ": the shared-memory box at shared address " + std::to_string(addr) +
                    " must be " + std::to_string(align) + "-byte aligned" +
                    (m.swizzle ? " (a swizzled box starts on its pattern boundary)" : ""),
                site);
  }
  return addr;
}

// The box's start in the innermost dimension, in bytes, must be a multiple of 16. The driver accepts any coordinate,
// but an H200 raised "illegal instruction" for loads and stores starting 136 and -8 bytes into a row, in bounds or
// not, and ran every 16-byte-aligned start (tests/emu/tma_gpu_cases.py, 2026-11-28; tilelang issue 2527 saw the
// same on an H100). The emulator rejects what the hardware faults on.
void check_inner_start(const TensorMapEmu& m, int32_t inner, const char* what, Site site) {
  const int64_t byte = int64_t{inner} * m.elem_bytes;
  if (byte % kInnerStartAlign != 0) {
    async_error(std::string(what) + ": the box starts at element " + std::to_string(inner) +
                    " of the innermost dimension, " + std::to_string(byte) +
                    " bytes into a row; it must start on a 16-byte multiple (the GPU faults with an illegal "
                    "instruction otherwise)",
                site);
  }
}

// Moves one box between global memory and shared memory (both views; stores read the async view and require
// it to equal the generic view).
void copy_box(BlockRunner& r, const TmaCopy& c, bool load) {
  const TensorMapEmu& m = c.map;
  const uint32_t e = m.elem_bytes;
  const auto sw = static_cast<ptx::Swizzle>(m.swizzle);
  uint32_t box[kTensorMapMaxRank] = {1, 1, 1, 1, 1};
  for (uint32_t d = 0; d < m.rank; ++d) box[d] = m.box[d];
  const uint32_t row_bytes = box[0] * e;
  const uint64_t rows = uint64_t{box[1]} * box[2] * box[3] * box[4];
  unsigned char* real = r.smem_base();
  unsigned char* shadow = r.smem_shadow();
  auto* gbase = static_cast<unsigned char*>(const_cast<void*>(m.base));
  for (uint64_t row = 0; row < rows; ++row) {
    bool row_in = true;
    int64_t goff = 0;
    for (uint32_t d = 1, rest = static_cast<uint32_t>(row); d < kTensorMapMaxRank; rest /= box[d], ++d) {
      if (d >= m.rank) break;
      const int64_t g = int64_t{c.coords[d]} + rest % box[d];
      row_in = row_in && g >= 0 && static_cast<uint64_t>(g) < m.dims[d];
      goff += g * static_cast<int64_t>(m.strides[d]);
    }
    for (uint32_t q = 0; q < row_bytes / kChunk; ++q) {
      const uint32_t phys = ptx::swizzle_address(c.smem + static_cast<uint32_t>(row) * row_bytes + q * kChunk, sw);
      for (uint32_t j = 0; j < kChunk / e; ++j) {
        const int64_t g0 = int64_t{c.coords[0]} + (q * kChunk) / e + j;
        const bool in = row_in && g0 >= 0 && static_cast<uint64_t>(g0) < m.dims[0];
        unsigned char* gptr = in ? gbase + goff + g0 * e : nullptr;
        const uint32_t s = phys + j * e;
        if (load) {
          if (in) {
            std::memcpy(real + s, gptr, e);
            std::memcpy(shadow + s, gptr, e);
          } else {
            std::memset(real + s, 0, e);
            std::memset(shadow + s, 0, e);
          }
        } else if (in) {
          if (std::memcmp(real + s, shadow + s, e) != 0) {
            async_error("the TMA store issued at " + site_str(c.site) + " reads shared address " +
                            std::to_string(s) + ", whose ordinary stores were not made visible to the async proxy: "
                            "fence.proxy.async.shared::cta after writing the tile (and before the store), and do not "
                            "write it before bulk_wait_group_read retires the store",
                        c.site);
          }
          std::memcpy(gptr, shadow + s, e);
        }
      }
    }
  }
}

}  // namespace

void encode_tensor_map(TensorMapEmu* map, const void* gmem, uint32_t elem_bytes, uint32_t rank, const uint64_t* dims,
                       const uint64_t* strides_bytes, const uint32_t* box, uint32_t swizzle_bytes) {
  if (rank < 1 || rank > kTensorMapMaxRank) map_error("rank must be 1..5, got " + std::to_string(rank));
  if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4 && elem_bytes != 8)
    map_error("element size must be 1, 2, 4 or 8 bytes, got " + std::to_string(elem_bytes));
  if (reinterpret_cast<uintptr_t>(gmem) % 16 != 0) map_error("the global address must be 16-byte aligned");
  if (swizzle_bytes != 0 && swizzle_bytes != 32 && swizzle_bytes != 64 && swizzle_bytes != 128)
    map_error("swizzle must be none, 32B, 64B or 128B");
  *map = TensorMapEmu{};
  map->base = gmem;
  map->rank = rank;
  map->elem_bytes = elem_bytes;
  map->swizzle = swizzle_bytes;
  for (uint32_t d = 0; d < rank; ++d) {
    const std::string dim = "dimension " + std::to_string(d);
    if (dims[d] < 1 || dims[d] > kMaxDim) map_error(dim + " size must be in [1, 2^32], got " + std::to_string(dims[d]));
    if (box[d] < 1 || box[d] > kMaxBox) map_error(dim + " box must be in [1, 256], got " + std::to_string(box[d]));
    const uint64_t stride = d == 0 ? elem_bytes : strides_bytes[d - 1];
    if (d > 0 && (stride % 16 != 0 || stride >= kMaxStride))
      map_error(dim + " stride must be a multiple of 16 below 2^40 bytes, got " + std::to_string(stride));
    map->dims[d] = dims[d];
    map->strides[d] = stride;
    map->box[d] = box[d];
  }
  const uint32_t inner = box[0] * elem_bytes;
  if (inner % 16 != 0) map_error("box[0] * element size must be a multiple of 16 bytes, got " + std::to_string(inner));
  if (swizzle_bytes && inner > swizzle_bytes)
    map_error("the box's inner dimension (" + std::to_string(inner) + " bytes) exceeds the swizzle span");
  if (swizzle_bytes && inner != swizzle_bytes) {
    map_error("the emulator models swizzled boxes whose inner dimension is exactly the swizzle span (" +
              std::to_string(swizzle_bytes) + " bytes), got " + std::to_string(inner));
  }
  map->magic = kTensorMapMagic;
}

void tma_load(void* smem_dst, const TensorMapEmu* map, const int32_t* coords, int rank, uint64_t* bar, Site site) {
  constexpr const char* kWhat = "cp.async.bulk.tensor (TMA load)";
  BlockRunner& r = sm90_runner(kWhat, site);
  check_map(map, rank, kWhat, site);
  const uint32_t dst = check_box(r, *map, smem_dst, kWhat, site);
  check_inner_start(*map, coords[0], kWhat, site);
  MbarrierState& b = lookup_barrier(r, bar, kWhat, site);
  if (!b.init_fenced) {
    async_error(std::string(kWhat) + " completes mbarrier " + hex_addr(bar) + ", whose mbarrier.init (at " +
                    site_str(b.init_site) + ") the initialising thread did not fence (fence_mbarrier_init or "
                    "fence_proxy_async_shared after the init, before the block barrier)",
                site);
  }
  const uint64_t bytes = box_bytes(*map);
  std::memset(r.smem_base() + dst, kPoison, bytes);
  std::memset(r.smem_shadow() + dst, kPoison, bytes);
  TmaCopy c{*map, {0, 0, 0, 0, 0}, dst, bar, r.running().ctx.linear_tid, site};
  for (int d = 0; d < rank; ++d) c.coords[d] = coords[d];
  r.async_units().loads.push_back(c);
}

void tma_load_multicast(void* smem_dst, const TensorMapEmu* map, const int32_t* coords, int rank, uint64_t* bar,
                        uint16_t cta_mask, Site site) {
  constexpr const char* kWhat = "cp.async.bulk.tensor .multicast::cluster (TMA load multicast)";
  BlockRunner& r = sm90_runner(kWhat, site);
  const size_t cluster_size = r.cluster().ctas.size();
  if (cta_mask == 0 || (cta_mask >> cluster_size) != 0) {
    async_error(std::string(kWhat) + ": ctaMask 0x" + std::to_string(cta_mask) + " must name ranks of this cluster "
                    "of " + std::to_string(cluster_size) + " block(s), at least one",
                site);
  }
  check_map(map, rank, kWhat, site);
  const uint32_t dst = check_box(r, *map, smem_dst, kWhat, site);
  const uint32_t bar_offset = checked_shared_address(r, bar, sizeof(uint64_t), kWhat, site);
  check_inner_start(*map, coords[0], kWhat, site);
  const uint64_t bytes = box_bytes(*map);
  for (uint32_t q = 0; q < cluster_size; ++q) {
    if (!((cta_mask >> q) & 1u)) continue;
    BlockRunner& peer = cluster_peer(r, q, kWhat, site);
    uint64_t* peer_bar = reinterpret_cast<uint64_t*>(peer.smem_base() + bar_offset);
    // (a peer that has not initialised its barrier yet: the launch lacks a cluster barrier after the inits)
    MbarrierState& b = lookup_barrier(peer, peer_bar, kWhat, site);
    if (!b.init_fenced) {
      async_error(std::string(kWhat) + " completes mbarrier " + hex_addr(peer_bar) + " of cluster rank " +
                      std::to_string(q) + ", whose mbarrier.init (at " + site_str(b.init_site) + ") was not fenced",
                  site);
    }
    std::memset(peer.smem_base() + dst, kPoison, bytes);
    std::memset(peer.smem_shadow() + dst, kPoison, bytes);
    TmaCopy c{*map, {0, 0, 0, 0, 0}, dst, peer_bar, r.running().ctx.linear_tid, site};
    for (int d = 0; d < rank; ++d) c.coords[d] = coords[d];
    peer.async_units().loads.push_back(c);  // performed when a thread of that block waits on its barrier
  }
}

void perform_loads_for(BlockRunner& r, const uint64_t* bar) {
  auto& loads = r.async_units().loads;
  for (size_t i = 0; i < loads.size();) {
    if (loads[i].bar != bar) {
      ++i;
      continue;
    }
    const TmaCopy c = loads[i];
    loads.erase(loads.begin() + static_cast<std::ptrdiff_t>(i));
    copy_box(r, c, true);
    MbarrierState* b = r.async_units().find_barrier(bar);
    if (b) complete_tx(r, *b, box_bytes(c.map));
  }
}

void tma_store(const TensorMapEmu* map, const int32_t* coords, int rank, const void* smem_src, Site site) {
  constexpr const char* kWhat = "cp.async.bulk.tensor (TMA store)";
  BlockRunner& r = sm90_runner(kWhat, site);
  check_map(map, rank, kWhat, site);
  const uint32_t src = check_box(r, *map, smem_src, kWhat, site);
  check_inner_start(*map, coords[0], kWhat, site);
  TmaCopy c{*map, {0, 0, 0, 0, 0}, src, nullptr, r.running().ctx.linear_tid, site};
  for (int d = 0; d < rank; ++d) c.coords[d] = coords[d];
  r.running().async.stores.push_back(c);
}

void perform_thread_stores(BlockRunner& r, Fiber& f, size_t upto) {
  FiberAsync& a = f.async;
  for (; a.stores_done < upto; ++a.stores_done) copy_box(r, a.stores[a.stores_done], false);
}

void bulk_commit_group(Site site) {
  FiberAsync& a = sm90_runner("cp.async.bulk.commit_group", site).running().async;
  a.store_group_ends.push_back(a.stores.size());
}

void bulk_wait_group(int pending, Site site) {
  BlockRunner& r = sm90_runner("cp.async.bulk.wait_group", site);
  Fiber& f = r.running();
  FiberAsync& a = f.async;
  while (a.store_group_ends.size() - a.store_groups_done > static_cast<size_t>(pending)) {
    perform_thread_stores(r, f, a.store_group_ends[a.store_groups_done]);
    ++a.store_groups_done;
  }
  if (a.stores_done == a.stores.size() && a.store_groups_done == a.store_group_ends.size()) {
    a.stores.clear();
    a.store_group_ends.clear();
    a.stores_done = a.store_groups_done = 0;
  }
}

std::string describe_tma_loads(const BlockRunner& r) {
  constexpr size_t kListed = 4;
  const auto& loads = r.async_units().loads;
  std::string out;
  for (size_t i = 0; i < loads.size() && i < kListed; ++i) {
    out += "\n    TMA load in flight, issued at " + site_str(loads[i].site) + " by thread " +
           std::to_string(loads[i].tid) + ", completes mbarrier " + hex_addr(loads[i].bar);
  }
  if (loads.size() > kListed) out += "\n    ... and " + std::to_string(loads.size() - kListed) + " more TMA loads";
  return out;
}

}  // namespace q35::simt
