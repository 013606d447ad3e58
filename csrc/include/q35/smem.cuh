// Q35_DYNAMIC_SMEM(type, name): declares `type* name` pointing at the block's dynamic shared memory (the launch's
// smem_bytes; 16-byte aligned). One spelling for nvcc and the emulator, which puts a guard page right after the
// launch's size (an access past it stops the kernel with an error) and fills it with 0xFF bytes at block start.
#pragma once

// Q35_DYNAMIC_SMEM_1024(type, name): the same, with the shared address 1024-byte aligned (what swizzled TMA boxes
// and wgmma tiles need; under the emulator dynamic shared memory starts at shared address 0).
#if defined(Q35_EMULATE)
#define Q35_DYNAMIC_SMEM(type, name) type* name = reinterpret_cast<type*>(::q35::simt::cur().dyn_smem)
#define Q35_DYNAMIC_SMEM_1024(type, name) Q35_DYNAMIC_SMEM(type, name)
#else
#define Q35_DYNAMIC_SMEM(type, name)                              \
  extern __shared__ __align__(16) unsigned char q35_dyn_smem_[]; \
  type* name = reinterpret_cast<type*>(q35_dyn_smem_)
#define Q35_DYNAMIC_SMEM_1024(type, name)                                \
  extern __shared__ __align__(1024) unsigned char q35_dyn_smem_1024_[]; \
  type* name = reinterpret_cast<type*>(q35_dyn_smem_1024_)
#endif
