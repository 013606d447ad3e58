// q35::launch(kernel, grid, block, smem_bytes, stream, args...): `kernel<<<grid, block, smem, stream>>>(args...)`
// plus the opt-in for more than 48 KiB of dynamic shared memory and an error check on CUDA; the emulator's
// runner under Q35_EMULATE. Launchers return its cudaError_t unchanged.
// q35::launch_cluster(kernel, grid, block, cluster, smem_bytes, stream, args...): the same in thread block clusters
// of `cluster` blocks (sm_90; cudaLaunchKernelEx with the cluster-dimension attribute; grid divisible by it).
#pragma once
#include <cstddef>
#include <utility>

#include "q35/device.cuh"

namespace q35 {

#if defined(Q35_EMULATE)
// simt::StreamArg converts implicitly from cudaStream_t (or nullptr) and records the caller's source location,
// which error messages name next to the kernel.
template <typename... KArgs, typename... Args>
inline cudaError_t launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem_bytes, simt::StreamArg stream,
                          Args&&... args) {
  return simt::run_kernel(kernel, grid, block, smem_bytes, stream, std::forward<Args>(args)...);
}
template <typename... KArgs, typename... Args>
inline cudaError_t launch_cluster(void (*kernel)(KArgs...), dim3 grid, dim3 block, dim3 cluster, size_t smem_bytes,
                                  simt::StreamArg stream, Args&&... args) {
  return simt::run_kernel_cluster(kernel, grid, block, cluster, smem_bytes, stream, std::forward<Args>(args)...);
}
#elif defined(__CUDACC__)
template <typename... KArgs, typename... Args>
inline cudaError_t launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                          Args&&... args) {
  if (smem_bytes > static_cast<size_t>(kDefaultDynamicSmemBytes)) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem_bytes));
    if (err != cudaSuccess) return err;
  }
  kernel<<<grid, block, smem_bytes, stream>>>(std::forward<Args>(args)...);
  return cudaGetLastError();
}
template <typename... KArgs, typename... Args>
inline cudaError_t launch_cluster(void (*kernel)(KArgs...), dim3 grid, dim3 block, dim3 cluster, size_t smem_bytes,
                                  cudaStream_t stream, Args&&... args) {
  if (smem_bytes > static_cast<size_t>(kDefaultDynamicSmemBytes)) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem_bytes));
    if (err != cudaSuccess) return err;
  }
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cluster.x;
  attr[0].val.clusterDim.y = cluster.y;
  attr[0].val.clusterDim.z = cluster.z;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem_bytes;
  config.stream = stream;
  config.attrs = attr;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}
#endif

}  // namespace q35
