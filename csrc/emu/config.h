// Process-wide emulator settings (thread order, emulated architecture, OS threads, fiber stack size) and
// statistics. Initialised from QWEN35_EMU_SCHEDULE / _ARCH / _THREADS / _STACK_KB; changed through
// q35/emu/control.h (the Python module qwen35_native.emulator).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace q35::simt {

enum class Order : int { kForward, kReverse, kRandom };
struct Schedule {
  Order order = Order::kForward;
  uint64_t seed = 0;
};

struct ArchLimits {
  int sm;                    // 80 or 90
  size_t max_dynamic_smem;   // bytes per block
};

struct Settings {
  Schedule schedule;
  ArchLimits arch;
  int os_threads;
  size_t stack_bytes;
};

// A consistent copy of the current settings.
Settings current_settings();
Schedule parse_schedule(const std::string& spec);  // throws std::invalid_argument
std::string schedule_name(const Schedule& s);
ArchLimits parse_arch(const std::string& spec);    // throws std::invalid_argument

void add_stats(uint64_t launches, uint64_t blocks, uint64_t threads, uint64_t switches, uint64_t barriers,
               uint64_t collectives);

}  // namespace q35::simt
