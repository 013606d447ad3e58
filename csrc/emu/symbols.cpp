// Kernel names from ELF symbols (see symbols.h). Only called when an error is reported.
#include "emu/symbols.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

namespace q35::simt {
namespace {

std::string demangle(const char* name) {
  int status = 0;
  char* out = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (status != 0 || !out) return name;
  std::string s(out);
  std::free(out);
  return s;
}

// Looks `offset` (relative to the object's load base) up in the SHT_SYMTAB of the ELF file at `path`.
std::string symtab_lookup(const char* path, uintptr_t offset) {
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  struct stat st {};
  std::string found;
  if (fstat(fd, &st) == 0 && static_cast<size_t>(st.st_size) > sizeof(Elf64_Ehdr)) {
    void* map = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (map != MAP_FAILED) {
      const auto* base = static_cast<const unsigned char*>(map);
      const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
      const bool ok = std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
                      eh->e_shoff + static_cast<uint64_t>(eh->e_shnum) * sizeof(Elf64_Shdr) <=
                          static_cast<uint64_t>(st.st_size);
      const auto* sh = ok ? reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff) : nullptr;
      for (int i = 0; ok && i < eh->e_shnum && found.empty(); ++i) {
        if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
        const auto* syms = reinterpret_cast<const Elf64_Sym*>(base + sh[i].sh_offset);
        const char* strtab = reinterpret_cast<const char*>(base + sh[sh[i].sh_link].sh_offset);
        const size_t count = sh[i].sh_size / sizeof(Elf64_Sym);
        for (size_t k = 0; k < count; ++k) {
          if (ELF64_ST_TYPE(syms[k].st_info) != STT_FUNC) continue;
          if (offset >= syms[k].st_value && offset < syms[k].st_value + syms[k].st_size) {
            found = demangle(strtab + syms[k].st_name);
            break;
          }
        }
      }
      munmap(map, static_cast<size_t>(st.st_size));
    }
  }
  close(fd);
  return found;
}

std::string lookup(const void* kernel) {
  Dl_info info{};
  if (dladdr(kernel, &info) != 0) {
    if (info.dli_sname && info.dli_saddr == kernel) return demangle(info.dli_sname);
    if (info.dli_fname && info.dli_fbase) {
      const auto offset = reinterpret_cast<uintptr_t>(kernel) - reinterpret_cast<uintptr_t>(info.dli_fbase);
      std::string s = symtab_lookup(info.dli_fname, offset);
      if (!s.empty()) return s;
      char buf[64];
      std::snprintf(buf, sizeof(buf), "+0x%zx", static_cast<size_t>(offset));
      const char* file = std::strrchr(info.dli_fname, '/');
      return std::string("<kernel at ") + (file ? file + 1 : info.dli_fname) + buf + " (stripped)>";
    }
  }
  char buf[48];
  std::snprintf(buf, sizeof(buf), "<kernel at %p>", kernel);
  return buf;
}

}  // namespace

std::string kernel_name(const void* kernel) {
  static std::mutex mutex;
  static std::map<const void*, std::string> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(kernel);
  if (it == cache.end()) it = cache.emplace(kernel, lookup(kernel)).first;
  return it->second;
}

}  // namespace q35::simt
