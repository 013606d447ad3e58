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

// The pre-pass slot of the chunk starting at token c0 of sequence n (gdn_chunk_slots).
__device__ __forceinline__ int64_t chunk_slot(int64_t n, int64_t seq_start, int64_t c0) {
  return n + seq_start / kChunk + (c0 - seq_start) / kChunk;
}

// Slot -> its chunk: tokens [c0, c0 + nv) of a sequence; false for the spare slots of the bound. The sequence is
// the largest n with n + floor(start_n / 64) <= slot (strictly increasing in n: a binary search).
__device__ inline bool find_chunk(const GdnChunkParams& p, int64_t slot, int64_t& c0, int& nv) {
  if (p.num_seqs <= 0 || slot < seq_bound(p, 0) / kChunk) return false;
  int64_t lo = 0, hi = p.num_seqs - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (mid + seq_bound(p, mid) / kChunk <= slot) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const int64_t start = seq_bound(p, lo);
  const int64_t end = seq_bound(p, lo + 1);
  c0 = start + (slot - lo - start / kChunk) * kChunk;
  if (c0 >= end) return false;
  nv = static_cast<int>(end - c0 < kChunk ? end - c0 : kChunk);
  return true;
}

// Offset of the [K, V] state of (index, head) in a [.., Hv, K, V] buffer.
__device__ __forceinline__ int64_t state_offset(const GdnChunkParams& p, int64_t index, int h) {
  return (index * p.num_v_heads + h) * int64_t{kHeadDim} * kHeadDim;
}

enum class Init { kZero, kIdentity, kLoad };

// What one CTA runs: chunks [warm_start, seg_end) in steps of 64, outputs only for chunks from seg_start on.
struct Run {
  int64_t warm_start;
  int64_t seg_start;
  int64_t seg_end;
  bool outputs;
  bool values;  // false: zero values (the transition map of the exact chain)
  Init init;
  const float* init_ptr;  // [K, V]
  float* final_ptr;       // [K, V] or nullptr
};

// The run of CTA (item, h, variant) in this pass; false when it has nothing to do.
__device__ inline bool plan_run(const GdnChunkParams& p, const Item& it, int h, int variant, Run& r) {
  r = {it.seg_start, it.seg_start, it.seg_end, p.pass == 1, true, Init::kZero, nullptr, nullptr};
  if (p.pass == 0) {  // segment states for the exact chain: only where the plan chose it, never the last segment
    if (!p.split || it.num_segs < 2 || it.s >= it.num_segs - 1) return false;
    if (p.plan_ptr[(it.item0 + 1) * p.num_v_heads + h] != kPlanChain) return false;
    if (variant == 0 && it.s == 0) {  // segment 0 from the sequence's initial state: the exact entry of segment 1
      r.init = Init::kLoad;
      r.init_ptr = p.ws_entry_ptr + state_offset(p, it.item0, h);
      r.final_ptr = p.ws_entry_ptr + state_offset(p, it.item0 + 1, h);
    } else if (variant == 0) {
      r.final_ptr = p.ws_local_ptr + state_offset(p, it.item0 + it.s, h);
    } else {
      if (it.s == 0) return false;
      r.values = false;
      r.init = Init::kIdentity;
      r.final_ptr = p.ws_trans_ptr + state_offset(p, it.item0 + it.s, h);
    }
    return true;
  }
  if (variant != 0) return false;
  if (!p.split) {
    const int64_t slot = p.state_in_slots ? load_index(p.state_in_slots, it.n, p.slots_int64) : it.n;
    if (p.state_in_ptr && (!p.has_initial_ptr || p.has_initial_ptr[it.n])) {
      r.init = Init::kLoad;
      r.init_ptr = p.state_in_ptr + state_offset(p, slot, h);
    }
  } else {
    const int plan = it.s == 0 ? kPlanChain : p.plan_ptr[(it.item0 + it.s) * p.num_v_heads + h];
    if (plan == kPlanChain) {  // the exact entry (segment 0: the snapshot of the initial state)
      r.init = Init::kLoad;
      r.init_ptr = p.ws_entry_ptr + state_offset(p, it.item0 + it.s, h);
    } else if (plan >= kPlanFromStart) {
      r.init = Init::kLoad;
      r.init_ptr = p.ws_entry_ptr + state_offset(p, it.item0, h);
      r.warm_start = it.seq_start;
    } else {
      r.warm_start = it.seg_start - int64_t{kChunk} * plan;
    }
  }
  if (it.s == it.num_segs - 1 && p.state_out_ptr) {
    const int64_t slot = p.state_out_slots ? load_index(p.state_out_slots, it.n, p.slots_int64) : it.n;
    r.final_ptr = p.state_out_ptr + state_offset(p, slot, h);
  }
  return true;
}

}  // namespace q35::gdn
