// The computations behind the warp intrinsics (q35/emu/warp_intrinsics.h), run by the last lane to arrive.
// Shuffles follow shfl.sync exactly (PTX_FACTS.md §5); a lane that reads a lane outside the mask (undefined on
// the GPU) gets all-ones bits (a NaN for floats), so a use of the undefined value shows in the output.
#include <algorithm>
#include <cstdint>

#include "emu/block_runner.h"
#include "q35/emu/warp_intrinsics.h"

namespace q35::simt {
namespace {

template <ShflMode kMode, bool kWide>
void shfl_compute(void* const* args, uint32_t mask, uint32_t arrived) {
  (void)mask;
  uint64_t values[kWarpLanes];
  for (uint32_t m = arrived; m; m &= m - 1) {
    const int l = __builtin_ctz(m);
    values[l] = static_cast<const ShflArgs*>(args[l])->value;
  }
  constexpr uint64_t kPoison = kWide ? ~uint64_t{0} : uint64_t{0xFFFFFFFFu};
  for (uint32_t m = arrived; m; m &= m - 1) {
    const int lane = __builtin_ctz(m);
    auto* a = static_cast<ShflArgs*>(args[lane]);
    // c = ((32 - width) << 8) | clamp, clamp = 0x1f except for .up (clang's __shfl_*_sync encoding)
    const int segmask = (kWarpLanes - a->width) & 0x1f;
    const int clamp = kMode == ShflMode::kUp ? 0 : 0x1f;
    const int b5 = a->b & 0x1f;
    const int max_lane = (lane & segmask) | (clamp & ~segmask);
    const int min_lane = lane & segmask;
    int j = lane;
    bool ok = false;
    switch (kMode) {
      case ShflMode::kIdx:
        j = min_lane | (b5 & ~segmask);
        ok = j <= max_lane;
        break;
      case ShflMode::kUp:
        j = lane - b5;
        ok = j >= max_lane;
        break;
      case ShflMode::kDown:
        j = lane + b5;
        ok = j <= max_lane;
        break;
      case ShflMode::kXor:
        j = lane ^ b5;
        ok = j <= max_lane;
        break;
    }
    if (!ok) {
      a->result = values[lane];
    } else {
      a->result = (arrived >> j & 1u) ? values[j] : kPoison;
    }
  }
}

void ballot_compute(void* const* args, uint32_t, uint32_t arrived) {
  uint32_t ballot = 0;
  for (uint32_t m = arrived; m; m &= m - 1) {
    const int l = __builtin_ctz(m);
    if (static_cast<const VoteArgs*>(args[l])->predicate) ballot |= 1u << l;
  }
  for (uint32_t m = arrived; m; m &= m - 1) static_cast<VoteArgs*>(args[__builtin_ctz(m)])->result = ballot;
}

void any_compute(void* const* args, uint32_t mask, uint32_t arrived) {
  ballot_compute(args, mask, arrived);
  for (uint32_t m = arrived; m; m &= m - 1) {
    auto* a = static_cast<VoteArgs*>(args[__builtin_ctz(m)]);
    a->result = a->result != 0;
  }
}

void all_compute(void* const* args, uint32_t mask, uint32_t arrived) {
  ballot_compute(args, mask, arrived);
  for (uint32_t m = arrived; m; m &= m - 1) {
    auto* a = static_cast<VoteArgs*>(args[__builtin_ctz(m)]);
    a->result = a->result == arrived;
  }
}

void syncwarp_compute(void* const*, uint32_t, uint32_t) {}

template <bool kAll>
void match_compute(void* const* args, uint32_t, uint32_t arrived) {
  bool all_equal = true;
  const uint64_t first = static_cast<const MatchArgs*>(args[__builtin_ctz(arrived)])->value;
  for (uint32_t m = arrived; m; m &= m - 1) {
    all_equal &= static_cast<const MatchArgs*>(args[__builtin_ctz(m)])->value == first;
  }
  for (uint32_t m = arrived; m; m &= m - 1) {
    auto* a = static_cast<MatchArgs*>(args[__builtin_ctz(m)]);
    if constexpr (kAll) {
      a->result = all_equal ? arrived : 0u;
      a->all_equal = all_equal;
    } else {
      uint32_t same = 0;
      for (uint32_t k = arrived; k; k &= k - 1) {
        if (static_cast<const MatchArgs*>(args[__builtin_ctz(k)])->value == a->value) same |= 1u << __builtin_ctz(k);
      }
      a->result = same;
    }
  }
}

template <ReduxOp kOp>
void redux_compute(void* const* args, uint32_t, uint32_t arrived) {
  const auto* first = static_cast<const ReduxArgs*>(args[__builtin_ctz(arrived)]);
  uint32_t acc = first->value;
  const bool is_signed = first->is_signed != 0;
  for (uint32_t m = arrived & (arrived - 1); m; m &= m - 1) {
    const uint32_t v = static_cast<const ReduxArgs*>(args[__builtin_ctz(m)])->value;
    switch (kOp) {
      case ReduxOp::kAdd:
        acc += v;
        break;
      case ReduxOp::kMin:
        acc = is_signed ? static_cast<uint32_t>(std::min(static_cast<int32_t>(acc), static_cast<int32_t>(v)))
                        : std::min(acc, v);
        break;
      case ReduxOp::kMax:
        acc = is_signed ? static_cast<uint32_t>(std::max(static_cast<int32_t>(acc), static_cast<int32_t>(v)))
                        : std::max(acc, v);
        break;
      case ReduxOp::kAnd:
        acc &= v;
        break;
      case ReduxOp::kOr:
        acc |= v;
        break;
      case ReduxOp::kXor:
        acc ^= v;
        break;
    }
  }
  for (uint32_t m = arrived; m; m &= m - 1) static_cast<ReduxArgs*>(args[__builtin_ctz(m)])->result = acc;
}

}  // namespace

const CollectiveOp kShflOps[4][2] = {
    {{"__shfl_sync", false, shfl_compute<ShflMode::kIdx, false>},
     {"__shfl_sync (64-bit)", false, shfl_compute<ShflMode::kIdx, true>}},
    {{"__shfl_up_sync", false, shfl_compute<ShflMode::kUp, false>},
     {"__shfl_up_sync (64-bit)", false, shfl_compute<ShflMode::kUp, true>}},
    {{"__shfl_down_sync", false, shfl_compute<ShflMode::kDown, false>},
     {"__shfl_down_sync (64-bit)", false, shfl_compute<ShflMode::kDown, true>}},
    {{"__shfl_xor_sync", false, shfl_compute<ShflMode::kXor, false>},
     {"__shfl_xor_sync (64-bit)", false, shfl_compute<ShflMode::kXor, true>}},
};
// Votes reduce over the non-exited lanes of the mask (PTX vote.sync); exited lanes contribute 0.
const CollectiveOp kBallotOp{"__ballot_sync", true, ballot_compute};
const CollectiveOp kAnyOp{"__any_sync", true, any_compute};
const CollectiveOp kAllOp{"__all_sync", true, all_compute};
const CollectiveOp kSyncwarpOp{"__syncwarp", false, syncwarp_compute};
const CollectiveOp kMatchAnyOp[2] = {{"__match_any_sync", false, match_compute<false>},
                                     {"__match_any_sync (64-bit)", false, match_compute<false>}};
const CollectiveOp kMatchAllOp[2] = {{"__match_all_sync", false, match_compute<true>},
                                     {"__match_all_sync (64-bit)", false, match_compute<true>}};
const CollectiveOp kReduxOps[6] = {
    {"__reduce_add_sync", false, redux_compute<ReduxOp::kAdd>}, {"__reduce_min_sync", false, redux_compute<ReduxOp::kMin>},
    {"__reduce_max_sync", false, redux_compute<ReduxOp::kMax>}, {"__reduce_and_sync", false, redux_compute<ReduxOp::kAnd>},
    {"__reduce_or_sync", false, redux_compute<ReduxOp::kOr>},   {"__reduce_xor_sync", false, redux_compute<ReduxOp::kXor>},
};

}  // namespace q35::simt
