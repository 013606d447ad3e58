// The sm_90a grouped expert GEMMs (moe_gate_up_sm90a.cu, moe_down_sm90a.cu): a persistent, warp-specialised
// TMA + wgmma pipeline over the (row tile, column block) work items of moe_align's tile list (block_m = 128).
// Kernel sources only (after q35/device.cuh). Design and the reasons for each choice: README.md, "sm_90a path".
//
// CTA: 3 warpgroups. Warpgroup 0 produces: lane 0 of warp 0 issues the TMA loads of the expert's weight tile B
// and, in down and in gate_up on rows already in tile order (moe_permute.cu: "sorted rows"), of the A rows (the
// other three warps exit); in gate_up on hidden its four warps gather the token rows of A, 32 rows each, with
// 16-byte cp.async into the same 128B-swizzled layout (TMA cannot gather rows by index; one warp issuing all
// 1,024 copies of a stage was close to a stage's wgmma time). Warpgroups 1
// and 2 consume: each owns 64 rows of the 128-row tile and runs wgmma m64n256k16 against the shared B tile, so
// the weights cross L2 -> SM once per 128 rows. A warpgroup whose 64 rows are all padding (an expert's last tile
// is often half empty) issues no wgmma, so the padding costs at most 64 rows of tensor work per expert.
// Pipeline: kStages stages of {A [128][64], B [256][64]} (16 + 32 KB), full / empty mbarriers per stage.
#pragma once
#include <cstdint>
#include <type_traits>

#include "kernels/moe/moe_gemm.cuh"
#include "q35/device.cuh"
#include "q35/ptx.cuh"
#include "q35/sm90_host.h"

namespace q35::Q35_TARGET::moe_sm90a {

constexpr int kBlockM = kMoeSm90BlockM;  // rows of a work item = one moe_align tile (a CTA's half of one in kPair)
constexpr int kPairBlockM = kMoeSm90PairBlockM;  // kPair: a moe_align tile of 256 rows, 128 per CTA of a 2-CTA cluster
constexpr int kWgRows = 64;              // rows per consumer warpgroup (wgmma M)
constexpr int kConsumers = kBlockM / kWgRows;
constexpr int kBlockN = 256;             // B rows per stage = wgmma N (gate_up: 128 gate + 128 up rows)
constexpr int kBlockK = 64;              // K per stage: 128 bytes of 16-bit elements = one 128B-swizzled box
constexpr int kMmaK = 16;
constexpr int kStages = 4;
constexpr int kALag = 2;                 // gate_up: a stage's cp.asyncs are awaited kALag stages after issue
constexpr int kWarpgroupThreads = 128;
constexpr int kGatherWarps = kWarpgroupThreads / kWarpSize;  // gate_up: the producer warpgroup's warps gather A
constexpr int kGatherRows = kBlockM / kGatherWarps;          // 32 rows of A per gathering warp
constexpr int kThreads = (1 + kConsumers) * kWarpgroupThreads;
constexpr int kAcc = kBlockN / 2;        // fp32 accumulators per consumer thread (m64n256)
constexpr int kProducerRegs = 56, kConsumerRegs = 224;  // 128 * 56 + 256 * 224 <= 64 K registers
static_assert(kALag <= kStages - 2, "consumers release a stage one stage late: a longer lag would deadlock");
static_assert(kWarpgroupThreads * kProducerRegs + kConsumers * kWarpgroupThreads * kConsumerRegs <= 65536);

// The stage tiles (functions: a namespace-scope struct constant is not usable in device code).
Q35_HD constexpr ptx::KMajorTile a_tile() { return {ptx::Swizzle::k128B, kBlockM}; }  // [128][64]
Q35_HD constexpr ptx::KMajorTile b_tile() { return {ptx::Swizzle::k128B, kBlockN}; }  // [256][64]
constexpr uint32_t kABytes = a_tile().box_bytes();       // 16 KB
constexpr uint32_t kWgABytes = kABytes / kConsumers;   // 8 KB: one consumer's rows (a TMA box in down)
constexpr uint32_t kBBytes = b_tile().box_bytes();       // 32 KB
constexpr uint32_t kStageBytes = kABytes + kBBytes;
constexpr uint32_t kBarrierOffset = kStages * kStageBytes;
constexpr size_t kSmemBytes = kBarrierOffset + 2 * kStages * sizeof(uint64_t);
static_assert(a_tile().box_cols() == kBlockK && b_tile().box_cols() == kBlockK, "one swizzled column block per stage");
static_assert(kStageBytes % 1024 == 0 && kWgABytes % 1024 == 0, "tiles start on the 128B swizzle pattern");

// Kernel parameter (const __grid_constant__): the tensor maps and the sizes of the work list.
struct KernelParams {
  TensorMap a_map;    // down: act [rows, I]; gate_up on sorted rows: [rows, H]; boxes {64 k, 64 rows}; else unused
  TensorMap b_map;    // gate_up: w13 as [2E][I][H], boxes {64, 128, 1}; down: w2 [E][H][I], boxes {64, 256, 1}
  MoeGemmParams p;
  int64_t num_items;  // max_tiles * n_blocks
  int n_blocks;       // column blocks per tile (gate_up: 128 outputs each, down: 256)
  int k_blocks;       // ceil(k / 64)
};

// Work item i = (tile i / n_blocks, column block i % n_blocks), tiles outermost: the CTAs running at one time
// work on a few consecutive tiles -- the same expert's tiles, which read the same weight blocks at about the
// same time (L2 hits), and all column blocks of a tile, which read the same A rows. CTA c takes items c, c + G,
// ... (every item costs the same K loop, so the CTAs stay in step). The tiles after the used ones (expert -1)
// end the list; producer and consumers walk the same items.
struct WorkItem {
  int64_t row0;  // first row of the tile (kPair: of this CTA's half) in sorted_pairs / act
  int n_block;
  int expert;
  bool lower;    // rows [row0, row0 + 64) hold at least one pair (false only in kPair's second half)
  bool upper;    // rows [row0 + 64, row0 + 128) hold at least one pair (else the second consumer idles)
};

// kPair (2-CTA clusters that share each weight tile, below): the CTA's rank in its cluster, the cluster's index and
// count in the grid. Otherwise 0, blockIdx.x and gridDim.x.
template <bool kPair>
__device__ __forceinline__ uint32_t pair_rank() {
  if constexpr (kPair) return ptx::cluster_ctarank();
  return 0;
}
template <bool kPair>
__device__ __forceinline__ int64_t first_item() {
  return kPair ? blockIdx.x / 2 : blockIdx.x;
}
template <bool kPair>
__device__ __forceinline__ int64_t item_stride() {
  return kPair ? gridDim.x / 2 : gridDim.x;
}

// Called by whole warps. The loaded values are broadcast from lane 0 so that the compiler sees them warp-uniform:
// branches on them are then not divergent, which ptxas needs to keep the wgmmas asynchronous (otherwise it
// serialises them, warning C7518/C7520), as CUTLASS does for its warp-group index.
template <bool kPair>
__device__ __forceinline__ bool fetch_item(const KernelParams& kp, int64_t item, WorkItem& w) {
  if (item >= kp.num_items) return false;
  const int64_t tile = item / kp.n_blocks;
  w.expert = __shfl_sync(0xffffffffu, kp.p.tile_experts_ptr[tile], 0);
  if (w.expert < 0) return false;
  w.row0 = kPair ? tile * kPairBlockM + kBlockM * pair_rank<kPair>() : tile * kBlockM;
  w.n_block = static_cast<int>(item % kp.n_blocks);
  // an expert's padding rows come last in its tile
  w.lower = !kPair || __shfl_sync(0xffffffffu, kp.p.sorted_pairs_ptr[w.row0], 0) >= 0;
  w.upper = __shfl_sync(0xffffffffu, kp.p.sorted_pairs_ptr[w.row0 + kWgRows], 0) >= 0;
  return true;
}

// The two rows of the tile whose accumulators a consumer thread holds (wgmma_acc_row: row_lo and row_lo + 8).
__device__ __forceinline__ int64_t thread_row_lo(const WorkItem& w, int wg) {
  return w.row0 + wg * kWgRows + ptx::wgmma_acc_row(static_cast<int>(threadIdx.x) % kWarpgroupThreads, 0);
}

// The pairs of those rows (-1: padding): what both epilogues load before the K loop (Epilogue::rows).
struct ThreadRows {
  int pair[2];
};
__device__ __forceinline__ ThreadRows thread_rows(const MoeGemmParams& p, const WorkItem& w, int wg) {
  const int64_t row_lo = thread_row_lo(w, wg);
  return {{p.sorted_pairs_ptr[row_lo], p.sorted_pairs_ptr[row_lo + 8]}};
}

template <typename T>
__device__ __forceinline__ void wgmma_m64n256k16(float (&acc)[kAcc], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  if constexpr (std::is_same_v<T, __half>) {
    ptx::wgmma_f16_ss<kBlockN>(acc, desc_a, desc_b, scale_d);
  } else {
    ptx::wgmma_bf16_ss<kBlockN>(acc, desc_a, desc_b, scale_d);
  }
}

// gate_up A: rows [32 pw, 32 pw + 32) of the tile's token rows of hidden, gathered by producer warp pw with
// 16-byte cp.async into the 128B-swizzled K-major layout. Lane l copies chunk l % 8 (8 elements) of rows
// 32 pw + l / 8 + 4 i, so each instruction reads four whole 128-byte row segments; the token of row 32 pw + r is
// held by lane r (tok) and shuffled. Padding rows and columns past k are zero-filled; the rows of an idle upper
// half are not copied (never read).
template <typename T>
__device__ __forceinline__ void gather_a(const KernelParams& kp, uint8_t* a_s, int tok, int pw, int k0, bool upper) {
  const T* hidden = static_cast<const T*>(kp.p.a_ptr);
  constexpr int kChunkElems = kVecBytes / static_cast<int>(sizeof(T));
  constexpr int kChunksPerRow = kBlockK / kChunkElems;  // 8
  constexpr int kRowsPerPass = kWarpSize / kChunksPerRow;  // 4
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int chunk = lane % kChunksPerRow;
  const int kcol = k0 + chunk * kChunkElems;
  const bool k_ok = kcol < kp.p.k;
  if (pw * kGatherRows >= kWgRows && !upper) return;  // (uniform)
#pragma unroll
  for (int i = 0; i < kGatherRows / kRowsPerPass; ++i) {
    const int r = lane / kChunksPerRow + kRowsPerPass * i;  // row of the warp's 32
    const int t = __shfl_sync(0xffffffffu, tok, r);
    const bool ok = k_ok && t >= 0;
    ptx::cp_async_16_zfill(a_s + a_tile().offset(pw * kGatherRows + r, chunk * kChunkElems),
                           ok ? hidden + static_cast<int64_t>(t) * kp.p.a_row_stride + kcol : hidden,
                           ok ? kVecBytes : 0);
  }
}

// A producer warp (pw: 0, and with kGatherA 1..3 too). Stage s of global step `it` (steps of all items in order)
// is refilled after the consumers released it (empty[s], phase it / kStages - 1). full[s] completes when warp 0
// lane 0's expect_tx arrival, the TMA bytes and, with kGatherA (gate_up on hidden), the 128 gathering lanes'
// arrivals (after their copies landed and were fenced to the async proxy) are in; the gather keeps kALag stages
// of cp.async in flight before it signals one. Without kGatherA the A rows come by TMA (2D boxes of 64 rows).
//
// kPair: both CTAs of a cluster work on the two 128-row halves of one 256-row tile, with the same weight tile:
// CTA r loads half r of B (gate_up: the gate or the up rows; down: 128 of the 256 output rows) and multicasts it
// into both CTAs, so each weight byte leaves L2 once per 256 rows instead of once per 128. A stage is refilled
// only after the consumers of both CTAs released it (empty[s] counts both), and full[s] expects the whole B tile.
template <typename T, bool kGateUp, bool kGatherA, bool kPair>
__device__ __forceinline__ void produce(const KernelParams& kp, uint8_t* smem, uint64_t* full, uint64_t* empty,
                                        int pw) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const bool leader = pw == 0 && lane == 0;  // the TMA loads and expect_tx
  if (leader) {
    ptx::tma_prefetch_map(&kp.b_map);
    if constexpr (!kGatherA) ptx::tma_prefetch_map(&kp.a_map);
  }
  uint32_t it = 0;
  WorkItem w;
  const uint32_t rank = pair_rank<kPair>();
  for (int64_t item = first_item<kPair>(); fetch_item<kPair>(kp, item, w); item += item_stride<kPair>()) {
    int tok = -1;  // gather: token of row 32 pw + lane (-1: padding)
    if constexpr (kGatherA) {
      const int pair = kp.p.sorted_pairs_ptr[w.row0 + pw * kGatherRows + lane];
      tok = pair >= 0 ? pair / kp.p.top_k : -1;
    }
    for (int kb = 0; kb < kp.k_blocks; ++kb, ++it) {
      const int s = static_cast<int>(it % kStages);
      ptx::mbarrier_wait_parity(&empty[s], ((it / kStages) & 1) ^ 1);  // round 0: the preceding phase, complete
      uint8_t* a_s = smem + s * kStageBytes;  // [128][64] K-major, 128B swizzle
      uint8_t* b_s = a_s + kABytes;           // [256][64] K-major, 128B swizzle
      const int k0 = kb * kBlockK;
      if (leader) {
        const uint32_t a_bytes = kGatherA ? 0 : ((w.lower ? 1 : 0) + (w.upper ? 1 : 0)) * kWgABytes;
        ptx::mbarrier_arrive_expect_tx(&full[s], kBBytes + a_bytes);
        if constexpr (kPair) {  // this CTA's half of B, into both CTAs of the cluster
          uint8_t* half = b_s + rank * (kBBytes / 2);
          if constexpr (kGateUp) {  // rank 0: the gate rows [j0, j0 + 128), rank 1: the matching up rows
            ptx::tma_load_3d_multicast(half, &kp.b_map, k0, w.n_block * (kBlockN / 2), 2 * w.expert + rank,
                                       &full[s], 0x3);
          } else {                  // output rows [h0 + 128 rank, h0 + 128 rank + 128)
            ptx::tma_load_3d_multicast(half, &kp.b_map, k0, w.n_block * kBlockN + rank * (kBlockN / 2), w.expert,
                                       &full[s], 0x3);
          }
        } else if constexpr (kGateUp) {  // gate rows [j0, j0 + 128), then the matching up rows (zeros past I)
          const int j0 = w.n_block * (kBlockN / 2);
          ptx::tma_load_3d(b_s, &kp.b_map, k0, j0, 2 * w.expert, &full[s]);
          ptx::tma_load_3d(b_s + kBBytes / 2, &kp.b_map, k0, j0, 2 * w.expert + 1, &full[s]);
        } else {
          ptx::tma_load_3d(b_s, &kp.b_map, k0, w.n_block * kBlockN, w.expert, &full[s]);
        }
        if constexpr (!kGatherA) {  // the rows of the active halves (an idle half reads nothing)
          if (w.lower) ptx::tma_load_2d(a_s, &kp.a_map, k0, static_cast<int32_t>(w.row0), &full[s]);
          const int32_t upper_row = static_cast<int32_t>(w.row0 + kWgRows);
          if (w.upper) ptx::tma_load_2d(a_s + kWgABytes, &kp.a_map, k0, upper_row, &full[s]);
        }
      }
      if constexpr (kGatherA) {
        gather_a<T>(kp, a_s, tok, pw, k0, w.upper);
        ptx::cp_async_commit_group();
        if (it >= kALag) {
          ptx::cp_async_wait_group<kALag>();
          ptx::fence_proxy_async_shared();  // generic-proxy writes (cp.async) -> read by wgmma (async proxy)
          ptx::mbarrier_arrive(&full[(it - kALag) % kStages]);
        }
      }
    }
  }
  if constexpr (kGatherA) {  // the last kALag stages
    ptx::cp_async_wait_all();
    ptx::fence_proxy_async_shared();
    for (uint32_t j = it > kALag ? it - kALag : 0; j < it; ++j) ptx::mbarrier_arrive(&full[j % kStages]);
  }
}

// A consumer warpgroup's K loop of one item: acc = A[rows 64 wg ..][:k] . B[0..256][:k]^T (fp32). Each stage's
// wgmmas are committed as a group; the stage before is released (one arrival per warp on empty) once that
// group retired (wait_group<1>), the last one after wait_group<0>. Returns with acc final and every stage of the
// item released. (Issue and waits sit on one branch: ptxas then keeps the wgmmas asynchronous.)
template <bool kPair>
__device__ __forceinline__ void release(uint64_t* empty_s) {  // one warp's arrival (kPair: in both CTAs)
  ptx::mbarrier_arrive(empty_s);
  if constexpr (kPair) ptx::mbarrier_arrive_cluster(empty_s, pair_rank<kPair>() ^ 1u);
}

template <typename T, bool kPair>
__device__ __forceinline__ void mainloop(const KernelParams& kp, uint8_t* smem, uint64_t* full, uint64_t* empty,
                                         int wg, uint32_t& it, float (&acc)[kAcc]) {
  const bool lane0 = threadIdx.x % kWarpSize == 0;
  for (int kb = 0; kb < kp.k_blocks; ++kb, ++it) {
    const int s = static_cast<int>(it % kStages);
    ptx::mbarrier_wait_parity(&full[s], (it / kStages) & 1);
    const uint32_t a_base = ptx::smem_u32(smem + s * kStageBytes);
    const uint32_t b_base = a_base + kABytes;
    ptx::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kBlockK / kMmaK; ++ks) {  // (the K tail is zero-filled: no branch around a wgmma)
      wgmma_m64n256k16<T>(acc, a_tile().desc(a_base, wg * kWgRows, ks * kMmaK), b_tile().desc(b_base, 0, ks * kMmaK),
                          kb > 0 || ks > 0);
    }
    ptx::wgmma_commit_group();
    ptx::wgmma_wait_group<1>();
    if (kb > 0 && lane0) release<kPair>(&empty[(it - 1) % kStages]);
  }
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operand(acc);
  if (lane0) release<kPair>(&empty[(it - 1) % kStages]);
}

// The K loop of a consumer warpgroup whose 64 rows are all padding: it only releases the stages (after they
// landed, so that its arrivals stay in the stage's current phase).
template <bool kPair>
__device__ __forceinline__ void idle_loop(const KernelParams& kp, uint64_t* full, uint64_t* empty, uint32_t& it) {
  for (int kb = 0; kb < kp.k_blocks; ++kb, ++it) {
    const int s = static_cast<int>(it % kStages);
    ptx::mbarrier_wait_parity(&full[s], (it / kStages) & 1);
    if (threadIdx.x % kWarpSize == 0) release<kPair>(&empty[s]);
  }
}

// The kernel body shared by both GEMMs: barrier set-up, the warp roles, and per item of a consumer warpgroup
// `epilogue.rows(w, wg)` (the thread's row indexes and whatever else the stores need from global memory, loaded
// before the K loop so that their latency hides behind it), the K loop, and `epilogue.store(w, wg, rows, acc)`
// (stores from registers; padding rows and columns past n skipped).
// kGateUp: B is w13's gate / up halves; kGatherA: A is gathered from hidden (else TMA boxes of rows in tile order);
// kPair: launched in 2-CTA clusters that share B (produce): barriers initialised before, and every thread of both
// CTAs at, a cluster barrier at the start and at the end (no CTA leaves while its peer may still signal it).
template <typename T, bool kGateUp, bool kGatherA, bool kPair, class Epilogue>
__device__ __forceinline__ void run_persistent_gemm(const KernelParams& kp, const Epilogue& epilogue) {
  Q35_DYNAMIC_SMEM_1024(uint8_t, smem);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kBarrierOffset);  // [kStages] smem: stage landed
  uint64_t* empty = full + kStages;                                       // [kStages] smem: stage released
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      ptx::mbarrier_init(&full[s], kGatherA ? 1 + kGatherWarps * kWarpSize : 1);
      ptx::mbarrier_init(&empty[s], (kPair ? 2 : 1) * kConsumers * kWarpgroupThreads / kWarpSize);
    }
    ptx::fence_mbarrier_init();
  }
  if constexpr (kPair) {
    ptx::cluster_sync();
  } else {
    __syncthreads();
  }
  const int warpgroup = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / kWarpgroupThreads, 0);  // uniform
  if (warpgroup == 0) {
    ptx::setmaxnreg_dec<kProducerRegs>();
    const int pw = static_cast<int>(threadIdx.x) / kWarpSize;  // (uniform)
    if (pw == 0 || kGatherA) produce<T, kGateUp, kGatherA, kPair>(kp, smem, full, empty, pw);
  } else {
    ptx::setmaxnreg_inc<kConsumerRegs>();
    const int wg = warpgroup - 1;
    float acc[kAcc];
    uint32_t it = 0;
    WorkItem w;
    for (int64_t item = first_item<kPair>(); fetch_item<kPair>(kp, item, w); item += item_stride<kPair>()) {
      if (wg == 0 ? w.lower : w.upper) {
        const auto rows = epilogue.rows(w, wg);
        mainloop<T, kPair>(kp, smem, full, empty, wg, it, acc);
        epilogue.store(w, wg, rows, acc);
      } else {
        idle_loop<kPair>(kp, full, empty, it);
      }
    }
  }
  if constexpr (kPair) ptx::cluster_sync();
}

// Host side: the persistent grid (at most one CTA per item; kPair: one 2-CTA cluster per item, an even count) and
// the checks shared by both launchers.
inline dim3 persistent_grid(const KernelParams& kp, bool pair = false) {
  const int64_t per_item = pair ? 2 : 1;
  int64_t ctas = kp.p.num_ctas < per_item * kp.num_items ? kp.p.num_ctas : per_item * kp.num_items;
  if (pair) ctas -= ctas % 2;
  return dim3(static_cast<unsigned>(ctas > per_item ? ctas : per_item));
}

template <typename T>
inline bool sm90a_args_ok(const MoeGemmParams& p) {
  constexpr int kVec = kVecBytes / static_cast<int>(sizeof(T));
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kVecBytes == 0; };
  return !std::is_same_v<T, float> && (p.block_m == kBlockM || p.block_m == kPairBlockM) && p.n >= 0 &&
         p.n % kVec == 0 && p.k > 0 && p.k % kVec == 0 && p.a_row_stride % kVec == 0 && p.top_k >= 1 &&
         p.num_experts >= 0 && p.num_ctas >= 1 && p.max_tiles >= 0 && p.max_tiles * p.block_m < (int64_t{1} << 31) &&
         aligned(p.a_ptr) && aligned(p.b_ptr) && aligned(p.c_ptr);
}

}  // namespace q35::Q35_TARGET::moe_sm90a
