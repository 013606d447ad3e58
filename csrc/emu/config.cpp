// Emulator settings (from the environment, then the control API) and statistics. See config.h.
#include "emu/config.h"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "q35/emu/control.h"

namespace q35::simt {
namespace {

constexpr size_t kDefaultStackKib = 256;
constexpr size_t kMinStackKib = 16;
constexpr size_t kSm80MaxDynamicSmem = 163 * 1024;  // 166912 bytes
constexpr size_t kSm90MaxDynamicSmem = 227 * 1024;  // 232448 bytes

std::mutex g_mutex;
Settings g_settings;
bool g_initialised = false;

std::atomic<uint64_t> g_launches{0}, g_blocks{0}, g_threads{0}, g_switches{0}, g_barriers{0}, g_collectives{0};

int default_os_threads() { return 1; }  // deterministic and fastest when pytest runs one worker per core

int resolve_threads(int threads) {
  if (threads < 0) throw std::invalid_argument("emulator threads must be >= 0 (0 = one per CPU core), got " +
                                               std::to_string(threads));
  if (threads == 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  return threads < 1 ? 1 : threads;
}

void init_locked() {
  if (g_initialised) return;
  g_settings.schedule = Schedule{};
  g_settings.arch = parse_arch("sm_90");
  g_settings.os_threads = default_os_threads();
  g_settings.stack_bytes = kDefaultStackKib * 1024;
  // Bad environment values are reported at the first launch rather than ignored.
  if (const char* s = std::getenv("QWEN35_EMU_SCHEDULE"); s && *s) g_settings.schedule = parse_schedule(s);
  if (const char* s = std::getenv("QWEN35_EMU_ARCH"); s && *s) g_settings.arch = parse_arch(s);
  if (const char* s = std::getenv("QWEN35_EMU_THREADS"); s && *s) g_settings.os_threads = resolve_threads(std::atoi(s));
  if (const char* s = std::getenv("QWEN35_EMU_STACK_KB"); s && *s) {
    const long kib = std::atol(s);
    if (kib < static_cast<long>(kMinStackKib))
      throw std::invalid_argument("QWEN35_EMU_STACK_KB must be >= 16, got '" + std::string(s) + "'");
    g_settings.stack_bytes = static_cast<size_t>(kib) * 1024;
  }
  g_initialised = true;
}

Settings& settings_locked() {
  init_locked();
  return g_settings;
}

}  // namespace

Settings current_settings() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return settings_locked();
}

Schedule parse_schedule(const std::string& spec) {
  if (spec == "forward") return Schedule{Order::kForward, 0};
  if (spec == "reverse") return Schedule{Order::kReverse, 0};
  const std::string prefix = "random:";
  if (spec.rfind(prefix, 0) == 0 && spec.size() > prefix.size()) {
    const std::string digits = spec.substr(prefix.size());
    if (digits.find_first_not_of("0123456789") == std::string::npos && digits.size() <= 19)
      return Schedule{Order::kRandom, std::stoull(digits)};
  }
  throw std::invalid_argument("emulator schedule must be 'forward', 'reverse' or 'random:<seed>' (seed a "
                              "non-negative integer), got '" + spec + "'");
}

std::string schedule_name(const Schedule& s) {
  switch (s.order) {
    case Order::kForward:
      return "forward";
    case Order::kReverse:
      return "reverse";
    case Order::kRandom:
      return "random:" + std::to_string(s.seed);
  }
  return "forward";
}

ArchLimits parse_arch(const std::string& spec) {
  if (spec == "sm_80" || spec == "80") return ArchLimits{80, kSm80MaxDynamicSmem};
  if (spec == "sm_90" || spec == "sm_90a" || spec == "90" || spec == "90a") return ArchLimits{90, kSm90MaxDynamicSmem};
  throw std::invalid_argument("emulator arch must be 'sm_80' or 'sm_90', got '" + spec + "'");
}

void add_stats(uint64_t launches, uint64_t blocks, uint64_t threads, uint64_t switches, uint64_t barriers,
               uint64_t collectives) {
  g_launches += launches;
  g_blocks += blocks;
  g_threads += threads;
  g_switches += switches;
  g_barriers += barriers;
  g_collectives += collectives;
}

// ---- control API (q35/emu/control.h) ----

void set_schedule(const std::string& order) {
  const Schedule s = parse_schedule(order);
  std::lock_guard<std::mutex> lock(g_mutex);
  settings_locked().schedule = s;
}
std::string get_schedule() { return schedule_name(current_settings().schedule); }

void set_arch(const std::string& arch) {
  const ArchLimits a = parse_arch(arch);
  std::lock_guard<std::mutex> lock(g_mutex);
  settings_locked().arch = a;
}
std::string get_arch() { return "sm_" + std::to_string(current_settings().arch.sm); }

void set_os_threads(int threads) {
  const int t = resolve_threads(threads);
  std::lock_guard<std::mutex> lock(g_mutex);
  settings_locked().os_threads = t;
}
int get_os_threads() { return current_settings().os_threads; }

void set_stack_kib(size_t kib) {
  if (kib < kMinStackKib) throw std::invalid_argument("emulator stack size must be >= 16 KiB, got " +
                                                      std::to_string(kib));
  std::lock_guard<std::mutex> lock(g_mutex);
  settings_locked().stack_bytes = kib * 1024;
}
size_t get_stack_kib() { return current_settings().stack_bytes / 1024; }

Stats get_stats() {
  return Stats{g_launches.load(), g_blocks.load(), g_threads.load(), g_switches.load(), g_barriers.load(),
               g_collectives.load()};
}
void reset_stats() {
  g_launches = g_blocks = g_threads = g_switches = g_barriers = g_collectives = 0;
}

}  // namespace q35::simt
