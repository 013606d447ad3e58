// Work items of the chunk kernels: an item is one segment of one sequence (the whole sequence without split),
// and the plan entry that says where the state entering a segment comes from. Shared by gdn_chunk.cu and
// gdn_chunk_split.cu.
#pragma once
#include "kernels/gdn/gdn_chunk.cuh"
#include "kernels/gdn/gdn_common.cuh"

namespace q35::gdn {

// plan[item, h] of a segment s >= 1 (segment 0 always enters with the snapshot in ws_entry[item]):
constexpr int kPlanChain = -1;           // the exact state, chained into ws_entry[item] by the pre-pass + chain
constexpr int kPlanFromStart = 1 << 16;  // + w: rerun the sequence's first w chunks from its initial state
                                         // (ws_entry of segment 0); w in [1, max]: w warm-up chunks from zero

struct Item {
  int64_t n;          // sequence
  int64_t s;          // segment of the sequence
  int64_t item0;      // item of the sequence's segment 0
  int64_t num_segs;   // segments of the sequence (>= 1 even when empty: its final state is still written)
  int64_t seq_start;  // token range of the sequence
  int64_t seq_end;
  int64_t seg_start;  // token range of the segment
  int64_t seg_end;
};

__device__ __forceinline__ int64_t seq_bound(const GdnChunkParams& p, int64_t n) {
  return load_index(p.cu_seqlens_ptr, n, p.cu_seqlens_int64);
}

__device__ __forceinline__ int64_t segments_of(const GdnChunkParams& p, int64_t len) {
  return len > p.segment_len ? ceil_div(len, p.segment_len) : 1;
}

// Item index -> (sequence, segment). Without split, item n is sequence n. With split (few sequences by
// construction: N * Hv < SMs) a walk over the sequences. False for the spare items of the grid's upper bound.
__device__ __forceinline__ bool find_item(const GdnChunkParams& p, int64_t item, Item& it) {
  int64_t base = 0;
  int64_t n = p.split ? 0 : item;
  for (; n < p.num_seqs; ++n) {
    const int64_t start = seq_bound(p, n);
    const int64_t end = seq_bound(p, n + 1);
    const int64_t segs = p.split ? segments_of(p, end - start) : 1;
    const int64_t first = p.split ? base : n;
    if (item < first + segs) {
      it.n = n;
      it.s = item - first;
      it.item0 = first;
      it.num_segs = segs;
      it.seq_start = start;
      it.seq_end = end;
      it.seg_start = start + it.s * p.segment_len;
      it.seg_end = it.seg_start + p.segment_len < end ? it.seg_start + p.segment_len : end;
      return true;
    }
    base += segs;
    if (!p.split) break;
  }
  return false;
}

// Offset of the [K, V] state of (index, head) in a [.., Hv, K, V] buffer.
__device__ __forceinline__ int64_t state_offset(const GdnChunkParams& p, int64_t index, int h) {
  return (index * p.num_v_heads + h) * int64_t{kHeadDim} * kHeadDim;
}

}  // namespace q35::gdn
