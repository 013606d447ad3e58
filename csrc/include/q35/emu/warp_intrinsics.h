// Warp-level intrinsics on the SIMT emulator: __shfl*_sync (any 1..8-byte type, with width), votes, __syncwarp,
// __activemask, __match_*_sync and __reduce_*_sync. Each is a rendezvous of the lanes in its mask that follows
// the PTX rules of PTX_FACTS.md §5 (implemented in csrc/emu/warp_ops.cpp).
#pragma once
#include <cstring>
#include <type_traits>

#include "q35/emu/runtime.h"

namespace q35::simt {

enum class ShflMode : int { kIdx = 0, kUp = 1, kDown = 2, kXor = 3 };
struct ShflArgs {
  uint64_t value;
  int b;      // srcLane, delta or laneMask
  int width;  // power of two in [1, 32]
  uint64_t result;
};
// [mode][0: 32-bit value, 1: 64-bit value (two PTX shuffles)]
Q35_EMU_API extern const CollectiveOp kShflOps[4][2];

template <typename T>
inline T shfl(ShflMode mode, unsigned mask, T var, int b, int width, Site site) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move at most 8 bytes");
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    kernel_error("shuffle width must be a power of two in [1, 32] (undefined otherwise)", site);
  ShflArgs args{0, b, width, 0};
  std::memcpy(&args.value, &var, sizeof(T));
  warp_collective(kShflOps[static_cast<int>(mode)][sizeof(T) > 4 ? 1 : 0], mask, &args, site);
  T out;
  std::memcpy(&out, &args.result, sizeof(T));
  return out;
}

struct VoteArgs {
  int predicate;
  unsigned result;
};
Q35_EMU_API extern const CollectiveOp kBallotOp, kAnyOp, kAllOp, kSyncwarpOp;

inline unsigned vote(const CollectiveOp& op, unsigned mask, int predicate, Site site) {
  VoteArgs args{predicate, 0};
  warp_collective(op, mask, &args, site);
  return args.result;
}

struct MatchArgs {
  uint64_t value;
  unsigned result;
  int all_equal;
};
Q35_EMU_API extern const CollectiveOp kMatchAnyOp[2], kMatchAllOp[2];

enum class ReduxOp : int { kAdd = 0, kMin, kMax, kAnd, kOr, kXor };
struct ReduxArgs {
  uint32_t value;
  int is_signed;
  uint32_t result;
};
Q35_EMU_API extern const CollectiveOp kReduxOps[6];

inline uint32_t redux(ReduxOp op, unsigned mask, uint32_t value, bool is_signed, Site site) {
  ReduxArgs args{value, is_signed, 0};
  warp_collective(kReduxOps[static_cast<int>(op)], mask, &args, site);
  return args.result;
}

}  // namespace q35::simt

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32, Q35_EMU_SITE_PARAMS) {
  return ::q35::simt::shfl(::q35::simt::ShflMode::kIdx, mask, var, srcLane, width, Q35_EMU_SITE);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32, Q35_EMU_SITE_PARAMS) {
  return ::q35::simt::shfl(::q35::simt::ShflMode::kUp, mask, var, static_cast<int>(delta), width, Q35_EMU_SITE);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32, Q35_EMU_SITE_PARAMS) {
  return ::q35::simt::shfl(::q35::simt::ShflMode::kDown, mask, var, static_cast<int>(delta), width, Q35_EMU_SITE);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32, Q35_EMU_SITE_PARAMS) {
  return ::q35::simt::shfl(::q35::simt::ShflMode::kXor, mask, var, laneMask, width, Q35_EMU_SITE);
}

inline unsigned __ballot_sync(unsigned mask, int predicate, Q35_EMU_SITE_PARAMS) {
  return ::q35::simt::vote(::q35::simt::kBallotOp, mask, predicate, Q35_EMU_SITE);
}
inline int __any_sync(unsigned mask, int predicate, Q35_EMU_SITE_PARAMS) {
  return static_cast<int>(::q35::simt::vote(::q35::simt::kAnyOp, mask, predicate, Q35_EMU_SITE));
}
inline int __all_sync(unsigned mask, int predicate, Q35_EMU_SITE_PARAMS) {
  return static_cast<int>(::q35::simt::vote(::q35::simt::kAllOp, mask, predicate, Q35_EMU_SITE));
}
inline void __syncwarp(unsigned mask = 0xffffffffu, Q35_EMU_SITE_PARAMS) {
  ::q35::simt::vote(::q35::simt::kSyncwarpOp, mask, 1, Q35_EMU_SITE);
}
inline unsigned __activemask(Q35_EMU_SITE_PARAMS) { return ::q35::simt::warp_active_mask(Q35_EMU_SITE); }

template <typename T>
inline unsigned __match_any_sync(unsigned mask, T value, Q35_EMU_SITE_PARAMS) {
  static_assert(std::is_integral_v<T> || std::is_floating_point_v<T>, "__match_any_sync: 32/64-bit scalar");
  ::q35::simt::MatchArgs args{0, 0, 0};
  std::memcpy(&args.value, &value, sizeof(T));
  ::q35::simt::warp_collective(::q35::simt::kMatchAnyOp[sizeof(T) > 4], mask, &args, Q35_EMU_SITE);
  return args.result;
}
template <typename T>
inline unsigned __match_all_sync(unsigned mask, T value, int* pred, Q35_EMU_SITE_PARAMS) {
  static_assert(std::is_integral_v<T> || std::is_floating_point_v<T>, "__match_all_sync: 32/64-bit scalar");
  ::q35::simt::MatchArgs args{0, 0, 0};
  std::memcpy(&args.value, &value, sizeof(T));
  ::q35::simt::warp_collective(::q35::simt::kMatchAllOp[sizeof(T) > 4], mask, &args, Q35_EMU_SITE);
  *pred = args.all_equal;
  return args.result;
}

#define Q35_EMU_REDUX(name, op, T, is_signed)                                                             \
  inline T name(unsigned mask, T value, Q35_EMU_SITE_PARAMS) {                                            \
    return static_cast<T>(                                                                                \
        ::q35::simt::redux(::q35::simt::ReduxOp::op, mask, static_cast<uint32_t>(value), is_signed, Q35_EMU_SITE)); \
  }
Q35_EMU_REDUX(__reduce_add_sync, kAdd, unsigned, false)
Q35_EMU_REDUX(__reduce_add_sync, kAdd, int, true)
Q35_EMU_REDUX(__reduce_min_sync, kMin, unsigned, false)
Q35_EMU_REDUX(__reduce_min_sync, kMin, int, true)
Q35_EMU_REDUX(__reduce_max_sync, kMax, unsigned, false)
Q35_EMU_REDUX(__reduce_max_sync, kMax, int, true)
Q35_EMU_REDUX(__reduce_and_sync, kAnd, unsigned, false)
Q35_EMU_REDUX(__reduce_or_sync, kOr, unsigned, false)
Q35_EMU_REDUX(__reduce_xor_sync, kXor, unsigned, false)
#undef Q35_EMU_REDUX
