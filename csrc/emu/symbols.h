// Names of kernels for error messages: the demangled symbol of the kernel's address, from the dynamic symbol
// table or, for kernels with internal linkage, the ELF symbol table of the library that contains it.
#pragma once
#include <string>

namespace q35::simt {

std::string kernel_name(const void* kernel);

}  // namespace q35::simt
