// q35::simt::run_kernel (what q35::launch calls under the emulator): packs the kernel arguments the way a CUDA
// launch does (converted to the parameter types, copied once; every thread gets its own by-value copy) and runs
// the grid on the SIMT emulator.
#pragma once
#include <tuple>
#include <type_traits>
#include <utility>

#include "q35/emu/runtime.h"

namespace q35::simt {

template <typename... KArgs>
struct KernelInvoker {
  using Params = std::tuple<std::decay_t<KArgs>...>;
  static void invoke(const void* kernel, const void* params) {
    auto fn = reinterpret_cast<void (*)(KArgs...)>(const_cast<void*>(kernel));
    std::apply(fn, *static_cast<const Params*>(params));
  }
};

// Returns cudaSuccess; faults (bad launch configuration, barrier divergence, deadlock, stack overflow, invalid
// memory access, ...) throw q35::simt::Error with a message naming the kernel, block and thread.
template <typename... KArgs, typename... Args>
cudaError_t run_kernel(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem_bytes, StreamArg stream,
                       Args&&... args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "q35::launch: wrong number of kernel arguments");
  using Invoker = KernelInvoker<KArgs...>;
  const typename Invoker::Params params(std::forward<Args>(args)...);
  LaunchSpec spec{reinterpret_cast<const void*>(kernel), &Invoker::invoke, &params, grid, block, smem_bytes,
                  stream.where};
  run_grid(spec);
  return cudaSuccess;
}

// The same with thread block clusters of `cluster` blocks (the blocks of a cluster run together).
template <typename... KArgs, typename... Args>
cudaError_t run_kernel_cluster(void (*kernel)(KArgs...), dim3 grid, dim3 block, dim3 cluster, size_t smem_bytes,
                               StreamArg stream, Args&&... args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "q35::launch_cluster: wrong number of kernel arguments");
  using Invoker = KernelInvoker<KArgs...>;
  const typename Invoker::Params params(std::forward<Args>(args)...);
  LaunchSpec spec{reinterpret_cast<const void*>(kernel), &Invoker::invoke, &params, grid, block, smem_bytes,
                  stream.where, cluster};
  run_grid(spec);
  return cudaSuccess;
}

}  // namespace q35::simt
