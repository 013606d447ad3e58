// Shared-memory layout of the chunk kernel and the ldmatrix fragment loads its products use (PTX_FACTS.md §1, §3).
// All tiles are 16-bit, row-major, rows padded by 16 bytes so that the 8 row addresses of an ldmatrix hit 8
// different 16-byte bank groups (row strides of 272 and 144 bytes). Also the K tile transpose both sm_90a paths use.
#pragma once
#include "kernels/gdn/gdn_common.cuh"

namespace q35::gdn {

constexpr int kChunkThreads = 256;                        // 8 warps
constexpr int kChunkWarps = kChunkThreads / kWarpSize;
constexpr int kRowsPerWarp = kHeadDim / kChunkWarps;      // value rows of the state per warp (16)
constexpr int kMmaM = 16;
constexpr int kMmaN = 8;
constexpr int kMmaK = 16;
constexpr int kLd = kHeadDim + 8;  // row stride (elements) of [64 x 128] tiles: q, k, v, -w, o staging
constexpr int kLdT = kChunk + 8;   // row stride (elements) of [64 x 64] 16-bit tiles: Tu, Tw, P
constexpr int kLdA = kChunk + 4;   // row stride (floats) of the fp32 [64 x 64] system matrix A / inverse T
constexpr int kTokenArrays = 5;    // G, exp(G), beta, beta * exp(G), exp(G_last - G)
constexpr int kInvBlock = 16;      // block size of the blocked triangular inverse
constexpr int kInvBlocks = kChunk / kInvBlock;

template <typename T>
struct ChunkSmem {
  static constexpr size_t kTileBytes = size_t{kChunk} * kLd * sizeof(T);  // one [64 x 128] tile
  static constexpr size_t kStageBytes = 3 * kTileBytes;                   // q, k, v of one chunk
  static constexpr size_t kStages = 0;                                    // [2] stages (double buffer)
  static constexpr size_t kAmat = kStages + 2 * kStageBytes;              // fp32 [64][kLdA], later -w [64][kLd]
  static constexpr size_t kTu = kAmat + size_t{kChunk} * kLdA * sizeof(float);
  static constexpr size_t kTw = kTu + size_t{kChunk} * kLdT * sizeof(T);
  static constexpr size_t kP = kTw + size_t{kChunk} * kLdT * sizeof(T);
  static constexpr size_t kScratch = kP + size_t{kChunk} * kLdT * sizeof(T);  // fp32 [3][16][16] inverse blocks
  static constexpr size_t kTok = kScratch + size_t{kInvBlocks - 1} * kInvBlock * kInvBlock * sizeof(float);
  static constexpr size_t kRed = kTok + size_t{kTokenArrays} * kChunk * sizeof(float);  // fp32 [8][64]
  static constexpr size_t kBytes = kRed + size_t{kChunkWarps} * kChunk * sizeof(float);
  static_assert(size_t{kChunk} * kLdA * sizeof(float) >= kTileBytes, "-w reuses the A matrix region");
  static_assert(kBytes <= 163 * 1024, "fits the 163 KiB of dynamic shared memory of sm_80");
};

// Views of the shared memory of one CTA.
template <typename T>
struct ChunkViews {
  unsigned char* base;
  __device__ T* q(int stage) const { return reinterpret_cast<T*>(base + stage * ChunkSmem<T>::kStageBytes); }
  __device__ T* k(int stage) const { return q(stage) + kChunk * kLd; }
  __device__ T* v(int stage) const { return k(stage) + kChunk * kLd; }
  __device__ float* amat() const { return reinterpret_cast<float*>(base + ChunkSmem<T>::kAmat); }
  __device__ T* w() const { return reinterpret_cast<T*>(base + ChunkSmem<T>::kAmat); }
  __device__ T* tu() const { return reinterpret_cast<T*>(base + ChunkSmem<T>::kTu); }
  __device__ T* tw() const { return reinterpret_cast<T*>(base + ChunkSmem<T>::kTw); }
  __device__ T* pm() const { return reinterpret_cast<T*>(base + ChunkSmem<T>::kP); }
  __device__ float* scratch() const { return reinterpret_cast<float*>(base + ChunkSmem<T>::kScratch); }
  __device__ float* tok(int array) const {
    return reinterpret_cast<float*>(base + ChunkSmem<T>::kTok) + array * kChunk;
  }
  __device__ float* red() const { return reinterpret_cast<float*>(base + ChunkSmem<T>::kRed); }
};
enum TokenArray { kTokG = 0, kTokExpG = 1, kTokBeta = 2, kTokBetaExpG = 3, kTokDecayToEnd = 4 };

// A fragment of rows [row0, row0 + 16) x cols [col0, col0 + 16) of a row-major tile X.
template <typename T>
__device__ __forceinline__ void lds_a(uint32_t (&a)[4], const T* x, int ld, int row0, int col0) {
  const int lane = threadIdx.x % kWarpSize;
  ptx::ldmatrix_x4(a, x + (row0 + lane % 16) * ld + col0 + 8 * (lane / 16));
}

// A fragment of X^T (16 m x 16 k) where X is stored [k][m] row-major: rows [k0, k0 + 16), cols [m0, m0 + 16).
template <typename T>
__device__ __forceinline__ void lds_a_trans(uint32_t (&a)[4], const T* x, int ld, int k0, int m0) {
  const int lane = threadIdx.x % kWarpSize;
  const int j = lane / 8;
  ptx::ldmatrix_x4_trans(a, x + (k0 + 8 * (j / 2) + lane % 8) * ld + m0 + 8 * (j % 2));
}

// B fragments of two n-tiles [n0, n0 + 8) and [n0 + 8, n0 + 16) x k16 [k0, k0 + 16) from Bt stored [n][k]
// row-major: b[0..1] = n-tile n0, b[2..3] = n-tile n0 + 8.
template <typename T>
__device__ __forceinline__ void lds_b_pair(uint32_t (&b)[4], const T* bt, int ld, int n0, int k0) {
  const int lane = threadIdx.x % kWarpSize;
  const int j = lane / 8;
  ptx::ldmatrix_x4(b, bt + (n0 + 8 * (j / 2) + lane % 8) * ld + k0 + 8 * (j % 2));
}

// The same from B stored [k][n] row-major (transposed load).
template <typename T>
__device__ __forceinline__ void lds_b_trans_pair(uint32_t (&b)[4], const T* x, int ld, int k0, int n0) {
  const int lane = threadIdx.x % kWarpSize;
  const int j = lane / 8;
  ptx::ldmatrix_x4_trans(b, x + (k0 + 8 * (j % 2) + lane % 8) * ld + n0 + 8 * (j / 2));
}

// B fragment of one n-tile [n0, n0 + 8) x k16 [k0, k0 + 16) from Bt stored [n][k] row-major.
template <typename T>
__device__ __forceinline__ void lds_b(uint32_t (&b)[2], const T* bt, int ld, int n0, int k0) {
  const int lane = threadIdx.x % kWarpSize;
  ptx::ldmatrix_x2(b, bt + (n0 + lane % 8) * ld + k0 + 8 * ((lane / 8) % 2));
}

__device__ __forceinline__ void zero_acc(float (&c)[4]) {
  c[0] = c[1] = c[2] = c[3] = 0.0f;
}

// ---- K^T [128 key][64 token] from a K tile: thread -> (key, 8 tokens), 8 2-byte loads at k_at(token, key) and
// one 16-byte store at kt_at(key, t0) (the sm_90a kernel's K^T in shared memory, the pre-pass's in global) ----
template <typename T, typename KAt, typename KtAt>
__device__ __forceinline__ void transpose_k_tile(KAt k_at, KtAt kt_at) {
  constexpr int kElems = kVecBytes / sizeof(T);
  for (int i = threadIdx.x; i < kHeadDim * (kChunk / kElems); i += kChunkThreads) {
    const int key = i % kHeadDim;
    const int t0 = (i / kHeadDim) * kElems;
    uint32_t packed[kElems / 2];
#pragma unroll
    for (int e = 0; e < kElems; e += 2) {
      packed[e / 2] = bits16(*k_at(t0 + e, key)) | (bits16(*k_at(t0 + e + 1, key)) << 16);
    }
    *reinterpret_cast<uint4*>(kt_at(key, t0)) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
  }
}

}  // namespace q35::gdn
