// Fibers' machine contexts: mmap'ed stacks with a PROT_NONE guard below them, and the context switch
// (hand-written on x86-64: callee-saved registers, rsp, mxcsr and the x87 control word; ucontext elsewhere,
// or everywhere with -DQ35_EMU_USE_UCONTEXT).
#pragma once
#include <cstddef>
#include <cstdint>

#if !defined(__x86_64__) && !defined(Q35_EMU_USE_UCONTEXT)
#define Q35_EMU_USE_UCONTEXT 1
#endif
#if defined(Q35_EMU_USE_UCONTEXT)
#include <ucontext.h>
#endif

namespace q35::simt {

struct Stack {
  char* mapping = nullptr;   // guard pages first, then the usable stack
  size_t mapping_bytes = 0;
  size_t guard_bytes = 0;
  char* lo() const { return mapping + guard_bytes; }
  char* hi() const { return mapping + mapping_bytes; }
  bool in_guard(const void* addr) const {
    auto a = reinterpret_cast<uintptr_t>(addr);
    auto g = reinterpret_cast<uintptr_t>(mapping);
    return a >= g && a < g + guard_bytes;
  }
};

// Throws std::runtime_error when the mapping fails.
Stack allocate_stack(size_t usable_bytes, size_t guard_bytes);
void free_stack(Stack& stack);

struct MachineContext {
#if defined(Q35_EMU_USE_UCONTEXT)
  ucontext_t uc;
#else
  void* sp = nullptr;
#endif
};

// Prepares `ctx` to start entry(arg) on `stack` at its next switch_context (with the default floating-point
// environment: round to nearest, no flush to zero, as a GPU's fp32 without fast-math).
void make_context(MachineContext& ctx, const Stack& stack, void (*entry)(void*), void* arg);
// Saves the running context into `from` and resumes `to`.
void switch_context(MachineContext& from, const MachineContext& to);
// Resumes `to` from a signal handler, abandoning the interrupted context.
[[noreturn]] void jump_context(const MachineContext& to);

}  // namespace q35::simt
