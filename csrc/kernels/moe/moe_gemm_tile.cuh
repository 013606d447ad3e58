// Tile machinery shared by the grouped expert GEMMs (moe_gate_up.cu, moe_down.cu): tile shapes, the cp.async
// pipeline over K, the warp-level 16x8x16 step (mma.sync for 16-bit types, SIMT FMAs in the same fragment layout
// for fp32) and the deterministic cross-warp K reduction. Kernel sources only (after q35/device.cuh).
#pragma once
#include <type_traits>

#include "kernels/moe/moe_gemm.cuh"
#include "q35/device.cuh"
#include "q35/ptx.cuh"

namespace q35::Q35_TARGET::moe_tile {

constexpr int kMmaM = 16;
constexpr int kMmaN = 8;
constexpr int kMmaK = 16;
constexpr int kMaxGridY = 65535;  // tiles beyond this loop inside the kernel

// A CTA computes a kBM x kBN output tile; its warps form a kWM x kWN x kWK grid: (wm, wn) own a
// (kBM / kWM) x (kBN / kWN) sub-tile, wk a slice of every K block (partial sums reduced through smem at the end).
template <int kBM, int kBN, int kBKBytes, int kWM, int kWN, int kWK, int kNumStages>
struct TileShape {
  static constexpr int kBlockM = kBM;
  static constexpr int kBlockN = kBN;
  static constexpr int kBlockKBytes = kBKBytes;  // K block in bytes: 16-bit types hold twice the elements of fp32
  static constexpr int kWarpsM = kWM;
  static constexpr int kWarpsN = kWN;
  static constexpr int kWarpsK = kWK;
  static constexpr int kStages = kNumStages;
  static constexpr int kThreads = kWM * kWN * kWK * kWarpSize;
  static constexpr int kWarpRows = kBM / kWM;
  static constexpr int kWarpCols = kBN / kWN;
  static constexpr int kMTiles = kWarpRows / kMmaM;
  static constexpr int kNTiles = kWarpCols / kMmaN;
  static_assert(kWarpRows % kMmaM == 0 && kWarpCols % (2 * kMmaN) == 0, "warp tile of whole m16 x n16 steps");
};

// Decode gate_up: 8 gate + 8 up columns over 16 rows; 4 warps split every 512-byte K block (each expert's
// [2I, H] weight streams from 2I / 16 CTAs, 4 stages in flight). Decode down: 64 columns, 4 warps side by side.
// Prefill (both GEMMs): 64 x 128 tiles, 2 x 2 warps of 32 x 64, 3 stages of 128-byte K blocks.
using DecodeGateUpShape = TileShape<16, 16, 512, 1, 1, 4, 4>;
using DecodeDownShape = TileShape<16, 64, 256, 1, 4, 1, 3>;
using PrefillShape = TileShape<64, 128, 128, 2, 2, 1, 3>;

// Shared-memory layout of one pipeline stage: A [kBlockM][kLds] then B [kBlockN][kLds] (B rows = weight rows =
// output columns, K contiguous). Rows are padded by 16 bytes, so the 8 row addresses of an ldmatrix (row stride
// = 4 mod 32 words) and the 16-byte cp.async chunks of a warp hit distinct banks.
template <typename T, class Shape>
struct TileSmem {
  static constexpr int kVecElems = kVecBytes / static_cast<int>(sizeof(T));
  static constexpr int kBlockK = Shape::kBlockKBytes / static_cast<int>(sizeof(T));
  static constexpr int kLds = kBlockK + kVecElems;
  static constexpr int kChunksPerRow = kBlockK / kVecElems;
  static constexpr int kRowsPerPass = Shape::kThreads / kChunksPerRow;  // rows one pass of the CTA's chunks covers
  static constexpr int kAChunks = Shape::kBlockM / kRowsPerPass;        // 16-byte copies per thread and stage
  static constexpr int kBChunks = Shape::kBlockN / kRowsPerPass;
  static constexpr int kAElems = Shape::kBlockM * kLds;
  static constexpr int kStageElems = (Shape::kBlockM + Shape::kBlockN) * kLds;
  static constexpr int kBytes = Shape::kStages * kStageElems * static_cast<int>(sizeof(T));
  static constexpr int kWarpK = kBlockK / Shape::kWarpsK;
  static constexpr int kAccRegs = Shape::kMTiles * Shape::kNTiles * 4;
  static constexpr int kReduceBytes =
      (Shape::kWarpsK - 1) * Shape::kWarpsM * Shape::kWarpsN * kAccRegs * kWarpSize * static_cast<int>(sizeof(float));
  static_assert(Shape::kThreads % kChunksPerRow == 0 && Shape::kBlockM % kRowsPerPass == 0 &&
                    Shape::kBlockN % kRowsPerPass == 0, "every thread copies the same column chunk of whole rows");
  static_assert(kWarpK % kMmaK == 0, "each K warp owns whole k16 steps");
  static_assert(kReduceBytes <= kBytes, "the K reduction reuses the pipeline's shared memory");
};

// The global rows a thread copies into every stage (nullptr: zero-fill, e.g. padding rows or columns past n).
template <typename T, class Shape>
struct TileLoader {
  using S = TileSmem<T, Shape>;
  const T* a_rows[S::kAChunks];
  const T* b_rows[S::kBChunks];
  const T* fallback;  // a valid address for zero-fill copies (no bytes are read)
  int k;              // reduction length; chunks at or past it are zero-filled
  int first_row;      // smem row of copy 0; copy i goes to row first_row + i * kRowsPerPass
  int col;            // element offset of this thread's chunk inside a K block

  __device__ __forceinline__ static int row_of(int i) {
    return static_cast<int>(threadIdx.x) / S::kChunksPerRow + i * S::kRowsPerPass;
  }

  __device__ __forceinline__ void init(const T* any_valid, int k_len) {
    fallback = any_valid;
    k = k_len;
    first_row = row_of(0);
    col = (static_cast<int>(threadIdx.x) % S::kChunksPerRow) * S::kVecElems;
  }

  // Issues the cp.async copies of K block `k_block` into `stage` (the caller commits the group).
  __device__ __forceinline__ void load(T* stage, int k_block) const {
    const int kcol = k_block * S::kBlockK + col;
    const bool k_ok = kcol < k;
#pragma unroll
    for (int i = 0; i < S::kAChunks; ++i) {
      const bool ok = k_ok && a_rows[i] != nullptr;
      ptx::cp_async_16_zfill(&stage[(first_row + i * S::kRowsPerPass) * S::kLds + col], ok ? a_rows[i] + kcol : fallback,
                             ok ? kVecBytes : 0);
    }
    T* b_stage = stage + S::kAElems;  // [kBlockN][kLds] smem
#pragma unroll
    for (int i = 0; i < S::kBChunks; ++i) {
      const bool ok = k_ok && b_rows[i] != nullptr;
      ptx::cp_async_16_zfill(&b_stage[(first_row + i * S::kRowsPerPass) * S::kLds + col],
                             ok ? b_rows[i] + kcol : fallback, ok ? kVecBytes : 0);
    }
  }
};

// The warp's place in the CTA's warp grid.
template <class Shape>
struct WarpCoord {
  int wm, wn, wk;
  __device__ __forceinline__ WarpCoord() {
    const int warp_id = static_cast<int>(threadIdx.x) / kWarpSize;
    wm = warp_id % Shape::kWarpsM;
    wn = (warp_id / Shape::kWarpsM) % Shape::kWarpsN;
    wk = warp_id / (Shape::kWarpsM * Shape::kWarpsN);
  }
};

// First smem B row of the warp's n8 tile ni. kPaired (gate_up): the CTA's B rows are [gate half | up half] and a
// warp's first kNTiles / 2 tiles are gate columns, the others the up columns of the same outputs, so that
// silu(gate) * up pairs registers of one thread.
template <class Shape, bool kPaired>
__device__ __forceinline__ int b_smem_row(int wn, int ni) {
  if constexpr (kPaired) {
    constexpr int kHalfTiles = Shape::kNTiles / 2;
    const int base = wn * (Shape::kWarpCols / 2);
    return ni < kHalfTiles ? base + ni * kMmaN : Shape::kBlockN / 2 + base + (ni - kHalfTiles) * kMmaN;
  } else {
    return wn * Shape::kWarpCols + ni * kMmaN;
  }
}

template <typename T>
__device__ __forceinline__ void mma_16816(float (&acc)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const uint32_t b[2] = {b0, b1};
  if constexpr (std::is_same_v<T, __half>) {
    ptx::mma_m16n8k16_f16(acc, a, b, acc);
  } else {
    ptx::mma_m16n8k16_bf16(acc, a, b, acc);
  }
}

// acc[mi][ni] += A[rows a_row0 + 16 mi + (0..15), kk + (0..15)] * B[rows b_smem_row(ni) + (0..7), same k]^T.
// Accumulator fragment of lane (g, t) = (lane / 4, lane % 4): rows g, g + 8; columns 2t, 2t + 1 (PTX_FACTS §1).
template <typename T, class Shape, bool kPaired>
__device__ __forceinline__ void warp_k16(float (&acc)[Shape::kMTiles][Shape::kNTiles][4], const T* a_s,
                                         const T* b_s, int a_row0, int wn, int kk) {
  constexpr int kLds = TileSmem<T, Shape>::kLds;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  if constexpr (std::is_same_v<T, float>) {
    const int g = lane / 4;
    const int t2 = (lane % 4) * 2;
#pragma unroll
    for (int mi = 0; mi < Shape::kMTiles; ++mi) {
      const float* a0 = a_s + (a_row0 + mi * kMmaM + g) * kLds + kk;  // [16] smem, row g
      const float* a1 = a0 + kMmaN * kLds;                              // row g + 8
#pragma unroll
      for (int ni = 0; ni < Shape::kNTiles; ++ni) {
        const float* b0 = b_s + (b_smem_row<Shape, kPaired>(wn, ni) + t2) * kLds + kk;  // [16] smem, column 2t
        const float* b1 = b0 + kLds;                                                   // column 2t + 1
#pragma unroll
        for (int k = 0; k < kMmaK; ++k) {
          acc[mi][ni][0] = fmaf(a0[k], b0[k], acc[mi][ni][0]);
          acc[mi][ni][1] = fmaf(a0[k], b1[k], acc[mi][ni][1]);
          acc[mi][ni][2] = fmaf(a1[k], b0[k], acc[mi][ni][2]);
          acc[mi][ni][3] = fmaf(a1[k], b1[k], acc[mi][ni][3]);
        }
      }
    }
  } else {
    uint32_t a[Shape::kMTiles][4];
#pragma unroll
    for (int mi = 0; mi < Shape::kMTiles; ++mi)
      ptx::ldmatrix_x4(a[mi], a_s + (a_row0 + mi * kMmaM + lane % kMmaM) * kLds + kk + kMmaN * (lane / kMmaM));
    const int matrix = lane / kMmaN;  // x4: matrices (ni, k lo), (ni, k hi), (ni + 1, k lo), (ni + 1, k hi)
#pragma unroll
    for (int ni = 0; ni < Shape::kNTiles; ni += 2) {
      const int row0 = b_smem_row<Shape, kPaired>(wn, ni);
      const int row1 = b_smem_row<Shape, kPaired>(wn, ni + 1);
      uint32_t b[4];
      ptx::ldmatrix_x4(b, b_s + ((matrix < 2 ? row0 : row1) + lane % kMmaN) * kLds + kk + kMmaN * (matrix % 2));
#pragma unroll
      for (int mi = 0; mi < Shape::kMTiles; ++mi) {
        mma_16816<T>(acc[mi][ni], a[mi], b[0], b[1]);
        mma_16816<T>(acc[mi][ni + 1], a[mi], b[2], b[3]);
      }
    }
  }
}

// acc (zero on entry) += this warp's K slices of A_tile * B_tile^T over all K blocks, through a kStages-deep
// cp.async pipeline (one __syncthreads per K block). Ends with every copy retired and a barrier, so the caller
// may reuse the shared memory.
template <typename T, class Shape, bool kPaired>
__device__ __forceinline__ void mainloop(float (&acc)[Shape::kMTiles][Shape::kNTiles][4], T* smem,
                                         const TileLoader<T, Shape>& loader, const WarpCoord<Shape>& w) {
  using S = TileSmem<T, Shape>;
  const int k_blocks = static_cast<int>(ceil_div(loader.k, S::kBlockK));
#pragma unroll
  for (int s = 0; s < Shape::kStages - 1; ++s) {
    if (s < k_blocks) loader.load(smem + s * S::kStageElems, s);
    ptx::cp_async_commit_group();
  }
  for (int kb = 0; kb < k_blocks; ++kb) {
    ptx::cp_async_wait_group<Shape::kStages - 2>();
    __syncthreads();  // block kb visible to all; everyone is done with the stage refilled below
    const int next = kb + Shape::kStages - 1;
    if (next < k_blocks) loader.load(smem + (next % Shape::kStages) * S::kStageElems, next);
    ptx::cp_async_commit_group();
    const T* a_s = smem + (kb % Shape::kStages) * S::kStageElems;  // [kBlockM][kLds] smem
    const T* b_s = a_s + S::kAElems;                               // [kBlockN][kLds] smem
#pragma unroll
    for (int ks = 0; ks < S::kWarpK / kMmaK; ++ks) {
      const int kk = w.wk * S::kWarpK + ks * kMmaK;
      if (kb * S::kBlockK + kk >= loader.k) break;  // K tail: whole zero steps skipped (uniform per warp)
      warp_k16<T, Shape, kPaired>(acc, a_s, b_s, w.wm * Shape::kWarpRows, w.wn, kk);
    }
  }
  ptx::cp_async_wait_all();
  __syncthreads();
}

// Sums the partial accumulators of the kWarpsK warps that share an output sub-tile into the wk == 0 warp, in
// the fixed order wk = 0, 1, ... (deterministic). Every thread calls it; smem: kReduceBytes, free on entry.
template <typename T, class Shape>
__device__ __forceinline__ void reduce_k_warps(float (&acc)[Shape::kMTiles][Shape::kNTiles][4], float* red,
                                               const WarpCoord<Shape>& w) {
  if constexpr (Shape::kWarpsK > 1) {
    constexpr int kRegs = TileSmem<T, Shape>::kAccRegs;
    constexpr int kMN = Shape::kWarpsM * Shape::kWarpsN;
    const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
    const int wmn = w.wn * Shape::kWarpsM + w.wm;
    if (w.wk > 0) {
#pragma unroll
      for (int mi = 0; mi < Shape::kMTiles; ++mi)
#pragma unroll
        for (int ni = 0; ni < Shape::kNTiles; ++ni)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int r = (mi * Shape::kNTiles + ni) * 4 + i;
            red[(((w.wk - 1) * kMN + wmn) * kRegs + r) * kWarpSize + lane] = acc[mi][ni][i];  // [wk-1][wmn][r][lane]
          }
    }
    __syncthreads();
    if (w.wk == 0) {
      for (int src = 0; src < Shape::kWarpsK - 1; ++src)
#pragma unroll
        for (int mi = 0; mi < Shape::kMTiles; ++mi)
#pragma unroll
          for (int ni = 0; ni < Shape::kNTiles; ++ni)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              const int r = (mi * Shape::kNTiles + ni) * 4 + i;
              acc[mi][ni][i] += red[((src * kMN + wmn) * kRegs + r) * kWarpSize + lane];
            }
    }
  }
}

// Launch geometry: x = output column blocks (CTAs of one row tile run together: its A rows come from L2),
// y = row tiles (grid-stride beyond kMaxGridY).
inline dim3 tile_grid(int64_t column_blocks, int64_t max_tiles) {
  return dim3(static_cast<unsigned>(column_blocks),
              static_cast<unsigned>(max_tiles < kMaxGridY ? max_tiles : kMaxGridY));
}

// Host-side requirements shared by both GEMMs (see moe_gemm.cuh).
template <typename T>
inline bool gemm_args_ok(const MoeGemmParams& p) {
  constexpr int kVec = kVecBytes / static_cast<int>(sizeof(T));
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % kVecBytes == 0; };
  const bool block_ok = p.block_m == kMoeDecodeBlockM || (p.block_m == kMoePrefillBlockM && !std::is_same_v<T, float>);
  const bool gathers = p.a_sorted_rows == 0;  // these tiles gather their rows themselves (sorted rows: sm_90a only)
  return block_ok && gathers && p.n >= 0 && p.k >= 0 && p.n % kVec == 0 && p.k % kVec == 0 &&
         p.a_row_stride % kVec == 0 && p.top_k >= 1 && p.max_tiles >= 0 &&
         p.max_tiles * p.block_m < (int64_t{1} << 31) && aligned(p.a_ptr) && aligned(p.b_ptr) && aligned(p.c_ptr);
}

}  // namespace q35::Q35_TARGET::moe_tile
