// One CUDA thread's cp.async state: issued copies in order, and the boundaries of its committed groups.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace q35::simt {

struct CpAsyncCopy {
  void* dst;
  const void* src;
  uint32_t cp_size;
  uint32_t src_size;
};

struct CpAsyncQueue {
  std::vector<CpAsyncCopy> copies;   // every copy not yet performed, oldest first
  std::vector<size_t> group_ends;    // committed group g holds copies [end of g-1, group_ends[g])
  size_t retired_groups = 0;         // groups [0, retired_groups) are complete
  size_t retired_copies = 0;

  void issue(const CpAsyncCopy& c) { copies.push_back(c); }
  void commit() { group_ends.push_back(copies.size()); }
  // Completes the oldest groups until at most `pending` committed groups remain.
  void wait(size_t pending);
  // At thread exit: every issued copy completes (as on the GPU, where nothing cancels them).
  void drain();
  void reset() {
    copies.clear();
    group_ends.clear();
    retired_groups = retired_copies = 0;
  }
};

}  // namespace q35::simt
