// Signal handling for the SIMT emulator (see faults.h). The handler runs on an alternate signal stack, records
// the fault in the block runner and jumps back to the scheduler, which reports it as a C++ exception; the
// faulting fiber's stack is abandoned (kernel code holds no resources that need unwinding).
#include "emu/faults.h"

#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdio>
#include <mutex>

#include "emu/config.h"

namespace q35::simt {
namespace {

constexpr size_t kAltStackBytes = 64 * 1024;
constexpr size_t kMinUsableAltStack = 16 * 1024;
constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGFPE};

struct sigaction g_previous[NSIG];
std::mutex g_install_mutex;

void chain_to_previous(int sig, siginfo_t* info, void* uctx) {
  const struct sigaction& prev = g_previous[sig];
  if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction) {
    prev.sa_sigaction(sig, info, uctx);
    return;
  }
  if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && prev.sa_handler) {
    prev.sa_handler(sig);
    return;
  }
  // Default action: restore it and return; the faulting instruction runs again and terminates the process.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
}

const void* stack_pointer_of(void* uctx) {
#if defined(__x86_64__)
  return reinterpret_cast<const void*>(static_cast<ucontext_t*>(uctx)->uc_mcontext.gregs[REG_RSP]);
#elif defined(__aarch64__)
  return reinterpret_cast<const void*>(static_cast<ucontext_t*>(uctx)->uc_mcontext.sp);
#else
  (void)uctx;
  return nullptr;
#endif
}

void fault_handler(int sig, siginfo_t* info, void* uctx) {
  BlockRunner* runner = active_runner();
  if (!runner || !runner->in_fiber()) {
    chain_to_previous(sig, info, uctx);
    return;
  }
  FaultKind kind = FaultKind::kInvalidAddress;
  const Stack& stack = runner->running().stack;
  if (sig == SIGFPE) {
    kind = FaultKind::kDivideByZero;
  } else if (stack.in_guard(info->si_addr) || stack.in_guard(stack_pointer_of(uctx))) {
    kind = FaultKind::kStackOverflow;
  } else if (runner->smem_guard_contains(info->si_addr)) {
    kind = FaultKind::kSmemOutOfBounds;
  }
  // We leave the handler without returning: unblock the signal it blocked on entry.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  runner->fault_running(kind, info->si_addr);
}

}  // namespace

void ensure_fault_handlers() {
  std::lock_guard<std::mutex> lock(g_install_mutex);
  for (int sig : kSignals) {
    struct sigaction cur {};
    sigaction(sig, nullptr, &cur);
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == fault_handler) continue;
    g_previous[sig] = cur;
    struct sigaction sa {};
    sa.sa_sigaction = fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, nullptr);
  }
}

void ensure_alt_stack() {
  thread_local bool done = false;
  if (done) return;
  stack_t cur{};
  sigaltstack(nullptr, &cur);
  if ((cur.ss_flags & SS_DISABLE) || cur.ss_size < kMinUsableAltStack) {
    void* mem = mmap(nullptr, kAltStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem != MAP_FAILED) {
      stack_t ss{};
      ss.ss_sp = mem;
      ss.ss_size = kAltStackBytes;
      ss.ss_flags = 0;
      sigaltstack(&ss, nullptr);  // kept for the thread's lifetime
    }
  }
  done = true;
}

std::string describe_fault(FaultKind kind, const void* address, const BlockRunner& runner, const Fiber& fiber) {
  char addr[32];
  std::snprintf(addr, sizeof(addr), "%p", address);
  switch (kind) {
    case FaultKind::kStackOverflow:
      return "stack overflow: the thread used more than its " +
             std::to_string((fiber.stack.hi() - fiber.stack.lo()) / 1024) +
             " KiB stack (raise it with QWEN35_EMU_STACK_KB or qwen35_native.emulator.set_stack_size)";
    case FaultKind::kSmemOutOfBounds: {
      const auto offset = static_cast<const unsigned char*>(address) - runner.smem_base();
      return "dynamic shared memory access out of bounds: byte offset " + std::to_string(offset) +
             " is past the launch's smem_bytes = " + std::to_string(runner.smem_bytes());
    }
    case FaultKind::kDivideByZero:
      return "integer division by zero (or INT_MIN / -1)";
    case FaultKind::kInvalidAddress:
    case FaultKind::kNone:
      break;
  }
  return std::string("invalid memory access at address ") + addr;
}

}  // namespace q35::simt
