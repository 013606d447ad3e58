// Control of the SIMT emulator from the host (no CUDA, no torch): used by qwen35_native._C's module functions
// (_emu_set_schedule, ...), which python/qwen35_native/emulator.py wraps. Settings are process-wide.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "q35/emu/runtime.h"

namespace q35::simt {

// A fault in an emulated kernel (message names the kernel, block and thread).
class Q35_EMU_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Each setter throws std::invalid_argument on a bad value.
Q35_EMU_API void set_schedule(const std::string& order);  // "forward" | "reverse" | "random:<seed>"
Q35_EMU_API std::string get_schedule();
Q35_EMU_API void set_arch(const std::string& arch);       // "sm_80" | "sm_90"
Q35_EMU_API std::string get_arch();
Q35_EMU_API void set_os_threads(int threads);             // >= 1; 0 = one per CPU core
Q35_EMU_API int get_os_threads();
Q35_EMU_API void set_stack_kib(size_t kib);               // per CUDA thread, >= 16
Q35_EMU_API size_t get_stack_kib();

struct Stats {
  uint64_t launches, blocks, threads, context_switches, barriers, warp_collectives;
};
Q35_EMU_API Stats get_stats();
Q35_EMU_API void reset_stats();

}  // namespace q35::simt
