// cp.async on the emulator: copies are queued per thread and performed when a wait retires their group (or at
// thread exit), so a read of the destination before the matching wait sees the old bytes.
#include <cstring>
#include <string>

#include "emu/block_runner.h"
#include "q35/emu/ptx_emu.h"

namespace q35::simt {
namespace {

constexpr size_t kCompactAfter = 256;  // retired copies kept before the queue is compacted

void perform(const CpAsyncCopy& c) {
  if (c.src_size) std::memcpy(c.dst, c.src, c.src_size);
  if (c.src_size < c.cp_size) std::memset(static_cast<char*>(c.dst) + c.src_size, 0, c.cp_size - c.src_size);
}

}  // namespace

void CpAsyncQueue::wait(size_t pending) {
  while (group_ends.size() - retired_groups > pending) {
    const size_t end = group_ends[retired_groups];
    for (size_t i = retired_copies; i < end; ++i) perform(copies[i]);
    retired_copies = end;
    ++retired_groups;
  }
  if (retired_copies == copies.size()) {
    if (retired_groups == group_ends.size()) reset();
  } else if (retired_copies >= kCompactAfter) {
    copies.erase(copies.begin(), copies.begin() + static_cast<std::ptrdiff_t>(retired_copies));
    group_ends.erase(group_ends.begin(), group_ends.begin() + static_cast<std::ptrdiff_t>(retired_groups));
    for (size_t& e : group_ends) e -= retired_copies;
    retired_copies = retired_groups = 0;
  }
}

void CpAsyncQueue::drain() {
  for (size_t i = retired_copies; i < copies.size(); ++i) perform(copies[i]);
  reset();
}

void cp_async(void* smem_dst, const void* gmem_src, int cp_size, int src_size, Site site) {
  if (src_size < 0 || src_size > cp_size) {
    kernel_error(("cp.async: src-size " + std::to_string(src_size) + " is outside [0, " + std::to_string(cp_size) +
                  "]").c_str(), site);
  }
  const auto align = static_cast<uintptr_t>(cp_size);
  if (reinterpret_cast<uintptr_t>(smem_dst) % align != 0 ||
      (src_size > 0 && reinterpret_cast<uintptr_t>(gmem_src) % align != 0)) {
    kernel_error(("cp.async: addresses must be aligned to the copy size (" + std::to_string(cp_size) + " bytes)")
                     .c_str(), site);
  }
  active_runner()->running().cp_async.issue(CpAsyncCopy{smem_dst, gmem_src, static_cast<uint32_t>(cp_size),
                                                        static_cast<uint32_t>(src_size)});
}

void cp_async_commit_group() { active_runner()->running().cp_async.commit(); }

void cp_async_wait_group(int n) { active_runner()->running().cp_async.wait(static_cast<size_t>(n)); }

}  // namespace q35::simt
