// Fiber stacks and context switches for the SIMT emulator (see context.h).
#include "emu/context.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

#if !defined(Q35_EMU_USE_UCONTEXT)
// q35_emu_switch(void** save_sp, void* new_sp): pushes the System V callee-saved registers and the floating-point
// control state on the current stack, stores rsp in *save_sp, loads new_sp and pops the same frame from there.
// q35_emu_trampoline: the first "return address" of a new fiber; calls entry(arg) from r13(r12).
asm(R"(
  .text
  .p2align 4
  .globl q35_emu_switch
  .hidden q35_emu_switch
  .type q35_emu_switch, @function
q35_emu_switch:
  .cfi_startproc
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .cfi_endproc
  .size q35_emu_switch, .-q35_emu_switch

  .p2align 4
  .globl q35_emu_trampoline
  .hidden q35_emu_trampoline
  .type q35_emu_trampoline, @function
q35_emu_trampoline:
  .cfi_startproc
  .cfi_undefined rip
  movq %r12, %rdi
  call *%r13
  ud2
  .cfi_endproc
  .size q35_emu_trampoline, .-q35_emu_trampoline
)");
extern "C" void q35_emu_switch(void** save_sp, void* new_sp);
extern "C" void q35_emu_trampoline();
#endif

namespace q35::simt {

Stack allocate_stack(size_t usable_bytes, size_t guard_bytes) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  usable_bytes = (usable_bytes + page - 1) / page * page;
  guard_bytes = (guard_bytes + page - 1) / page * page;
  Stack s;
  s.mapping_bytes = usable_bytes + guard_bytes;
  s.guard_bytes = guard_bytes;
  void* p = mmap(nullptr, s.mapping_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) {
    throw std::runtime_error("qwen35_native emulator: cannot map a " + std::to_string(s.mapping_bytes) +
                             "-byte fiber stack: " + std::strerror(errno));
  }
  s.mapping = static_cast<char*>(p);
  if (mprotect(s.mapping, guard_bytes, PROT_NONE) != 0) {
    munmap(p, s.mapping_bytes);
    throw std::runtime_error(std::string("qwen35_native emulator: cannot protect a stack guard page: ") +
                             std::strerror(errno));
  }
  return s;
}

void free_stack(Stack& stack) {
  if (stack.mapping) munmap(stack.mapping, stack.mapping_bytes);
  stack = Stack{};
}

#if defined(Q35_EMU_USE_UCONTEXT)

namespace {
void ucontext_entry(unsigned lo, unsigned hi, unsigned elo, unsigned ehi) {
  auto arg = reinterpret_cast<void*>((static_cast<uintptr_t>(hi) << 32) | lo);
  auto entry = reinterpret_cast<void (*)(void*)>((static_cast<uintptr_t>(ehi) << 32) | elo);
  entry(arg);
  __builtin_trap();  // entry never returns
}
}  // namespace

void make_context(MachineContext& ctx, const Stack& stack, void (*entry)(void*), void* arg) {
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack.lo();
  ctx.uc.uc_stack.ss_size = stack.hi() - stack.lo();
  ctx.uc.uc_link = nullptr;
  const auto a = reinterpret_cast<uintptr_t>(arg);
  const auto e = reinterpret_cast<uintptr_t>(entry);
  makecontext(&ctx.uc, reinterpret_cast<void (*)()>(ucontext_entry), 4, static_cast<unsigned>(a),
              static_cast<unsigned>(a >> 32), static_cast<unsigned>(e), static_cast<unsigned>(e >> 32));
}

void switch_context(MachineContext& from, const MachineContext& to) { swapcontext(&from.uc, &to.uc); }

void jump_context(const MachineContext& to) {
  setcontext(&to.uc);
  __builtin_trap();
}

#else

namespace {
constexpr uint32_t kDefaultMxcsr = 0x1F80;  // all exceptions masked, round to nearest, no FTZ/DAZ
constexpr uint16_t kDefaultX87Cw = 0x037F;
}  // namespace

void make_context(MachineContext& ctx, const Stack& stack, void (*entry)(void*), void* arg) {
  // Frame popped by q35_emu_switch: [mxcsr, x87 cw] r15 r14 r13 r12 rbx rbp, then the return address. After the
  // `ret` into the trampoline rsp must be 16-byte aligned so that its `call` enters entry() with the ABI's
  // alignment.
  auto top = reinterpret_cast<uintptr_t>(stack.hi()) & ~uintptr_t{15};
  auto* frame = reinterpret_cast<uint64_t*>(top - 16 - 8 * 8);
  frame[0] = kDefaultMxcsr | (static_cast<uint64_t>(kDefaultX87Cw) << 32);
  frame[1] = 0;                                        // r15
  frame[2] = 0;                                        // r14
  frame[3] = reinterpret_cast<uint64_t>(entry);        // r13
  frame[4] = reinterpret_cast<uint64_t>(arg);          // r12
  frame[5] = 0;                                        // rbx
  frame[6] = 0;                                        // rbp
  frame[7] = reinterpret_cast<uint64_t>(&q35_emu_trampoline);
  ctx.sp = frame;
}

void switch_context(MachineContext& from, const MachineContext& to) { q35_emu_switch(&from.sp, to.sp); }

void jump_context(const MachineContext& to) {
  void* discarded = nullptr;
  q35_emu_switch(&discarded, to.sp);
  __builtin_trap();
}

#endif

}  // namespace q35::simt
