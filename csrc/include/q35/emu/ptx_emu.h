// Emulator side of the q35/ptx wrappers: warp collectives that follow PTX_FACTS.md element by element, and the
// per-thread cp.async queue. Implemented in csrc/emu/matrix_ops.cpp and csrc/emu/cp_async.cpp.
#pragma once
#include <cstdint>

#include "q35/emu/runtime.h"

namespace q35::simt {

enum class MmaInput : int { kBf16 = 0, kF16 = 1 };

// ldmatrix / stmatrix .m8n8 .b16 with num_matrices in {1, 2, 4}; row_addr: this lane's row address.
Q35_EMU_API void ldmatrix(int num_matrices, bool trans, uint32_t* regs, const void* row_addr, Site site);
Q35_EMU_API void stmatrix(int num_matrices, bool trans, const uint32_t* regs, void* row_addr, Site site);
// mma.sync.aligned.m16n8k{8,16}.row.col with f32 accumulators (a: k/4 regs, b: k/8 regs, c/d: 4 floats).
Q35_EMU_API void mma_f32acc(int k, MmaInput type, float* d, const uint32_t* a, const uint32_t* b, const float* c,
                            Site site);
// mma.sync.aligned.m16n8k{8,16}.row.col.f16.f16.f16.f16 (c/d: 2 regs of f16x2).
Q35_EMU_API void mma_f16acc(int k, uint32_t* d, const uint32_t* a, const uint32_t* b, const uint32_t* c, Site site);

// cp.async: queued per thread; the copy happens when a wait retires its group.
Q35_EMU_API void cp_async(void* smem_dst, const void* gmem_src, int cp_size, int src_size, Site site);
Q35_EMU_API void cp_async_commit_group();
Q35_EMU_API void cp_async_wait_group(int n);

}  // namespace q35::simt
