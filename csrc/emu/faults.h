// Hardware faults inside emulated kernels (SIGSEGV, SIGBUS, SIGFPE): a fault in a fiber (stack overflow into
// the guard page, dynamic shared memory past the launch's size, an invalid address, integer division by zero)
// becomes an error of that thread; any other fault goes to the handler that was installed before ours.
#pragma once
#include <string>

#include "emu/block_runner.h"

namespace q35::simt {

// Installs the handlers (again, if someone replaced them) and this OS thread's alternate signal stack.
void ensure_fault_handlers();
void ensure_alt_stack();
std::string describe_fault(FaultKind kind, const void* address, const BlockRunner& runner, const Fiber& fiber);

}  // namespace q35::simt
