// The output stage shared by both chunk kernels (gdn_chunk.cu, gdn_chunk_sm90a.cu): the per-token sums of squares
// of o for the fused gated RMSNorm, and the rows of o written out, 16 bytes per thread, through that norm when z
// is given. Notation of MODEL_SPEC §3b.9.
#pragma once
#include "kernels/gdn/gdn_chunk.cuh"
#include "kernels/gdn/gdn_chunk_frags.cuh"

namespace q35::gdn {

// The token sums of squares of a warp's o fragments (lane l holds tokens nt * kMmaN + 2 (l % 4) + c of its rows),
// summed over the warp's lanes of equal l % 4 and stored as the warp's partials red[warp * kChunk + token].
template <int kTiles>
__device__ __forceinline__ void store_token_sums(float (&ss)[kTiles][2], float* red) {
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
#pragma unroll
  for (int nt = 0; nt < kTiles; ++nt) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      float x = ss[nt][c];
      x += __shfl_xor_sync(warp::kFullMask, x, 4);
      x += __shfl_xor_sync(warp::kFullMask, x, 8);
      x += __shfl_xor_sync(warp::kFullMask, x, 16);
      if (lane < 4) red[warp * kChunk + nt * kMmaN + 2 * lane + c] = x;
    }
  }
}

// The last step of both chunk kernels' output stage: the chunk's o, rounded to T and staged in shared memory,
// written row by row in 16-byte pieces, through the gated RMSNorm when z is given (the per-token sums of squares
// of the rounded o as warp partials in red[warp * kChunk + row]). load_piece(row, col, x) reads 8 / 16-bit values of
// the staged row from the kernel's own layout.
template <typename T, typename LoadPiece>
__device__ __forceinline__ void store_output_rows(const GdnChunkParams& p, const float* red, int h, int64_t c0,
                                                  int nv, LoadPiece load_piece) {
  constexpr int kElems = kVecBytes / sizeof(T);
  constexpr int kPieces = kHeadDim / kElems;  // 16-byte pieces of an output row
  for (int i = threadIdx.x; i < kChunk * kPieces; i += kChunkThreads) {
    const int row = i / kPieces;
    const int col = (i % kPieces) * kElems;
    if (row >= nv) continue;
    float x[kElems];
    load_piece(row, col, x);
    const int64_t t = c0 + row;
    if (p.z_ptr) {
      float sum = 0.0f;
#pragma unroll
      for (int w = 0; w < kChunkWarps; ++w) sum += red[w * kChunk + row];
      const float rstd = rsqrtf(sum / static_cast<float>(kHeadDim) + p.eps);
      const T* z = static_cast<const T*>(p.z_ptr) + t * p.z_token_stride + h * kHeadDim + col;
      float zv[kElems];
      if (p.z_vec) {
        load_vec_f32<T, kElems>(z, zv);
      } else {
#pragma unroll
        for (int e = 0; e < kElems; ++e) zv[e] = to_float(z[e]);
      }
#pragma unroll
      for (int e = 0; e < kElems; ++e) {
        const float w = load_param<T>(p.norm_weight_ptr, col + e, p.norm_weight_fp32);
        x[e] = gated_norm_value<T>(x[e], rstd, w, p.norm_weight_fp32, zv[e]);
      }
    }
    store_vec_f32<T, kElems>(static_cast<T*>(p.out_ptr) + t * p.out_token_stride + h * kHeadDim + col, x);
  }
}

}  // namespace q35::gdn
