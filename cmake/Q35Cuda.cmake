# Locates the real CUDA toolkit (nvcc on PATH may be a wrapper script), enables the CUDA language and sets
# the architecture list. Sets Q35_WITH_CUDA and Q35_CUDA_ROOT.
#   QWEN35_CUDA_ARCHS   (env or -D) semicolon/comma list, default "80;90a"
#   QWEN35_NO_CUDA=1    (env) build the CPU (emulator) implementations only
set(Q35_WITH_CUDA OFF)
set(Q35_CUDA_ROOT "")

function(_q35_find_cuda_root out)
  foreach(cand "$ENV{CUDA_HOME}" "$ENV{CUDA_PATH}" "$ENV{CUDAToolkit_ROOT}" "/usr/local/cuda")
    if(cand AND EXISTS "${cand}/bin/nvcc")
      get_filename_component(cand "${cand}" REALPATH)
      set(${out} "${cand}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  find_program(_nvcc_on_path nvcc)
  if(_nvcc_on_path)
    # A wrapper script hides the toolkit; nvcc's dry run prints the real root as 'TOP='.
    execute_process(COMMAND "${_nvcc_on_path}" --dryrun -x cu -c /dev/null -o /dev/null
                    ERROR_VARIABLE _dry OUTPUT_VARIABLE _dry_out RESULT_VARIABLE _rc)
    string(REGEX MATCH "TOP=([^\n]*)" _m "${_dry}${_dry_out}")
    if(CMAKE_MATCH_1 AND EXISTS "${CMAKE_MATCH_1}/bin/nvcc")
      get_filename_component(_root "${CMAKE_MATCH_1}" REALPATH)
      set(${out} "${_root}" PARENT_SCOPE)
      return()
    endif()
  endif()
  set(${out} "" PARENT_SCOPE)
endfunction()

_q35_find_cuda_root(Q35_CUDA_ROOT)

if("$ENV{QWEN35_NO_CUDA}" STREQUAL "1")
  message(STATUS "qwen35_native: QWEN35_NO_CUDA=1, building the CPU (emulator) implementations only")
elseif(NOT Q35_TORCH_HAS_CUDA)
  message(STATUS "qwen35_native: this torch has no CUDA; building the CPU (emulator) implementations only")
elseif(NOT Q35_CUDA_ROOT)
  message(STATUS "qwen35_native: no CUDA toolkit (nvcc) found; building the CPU (emulator) implementations only")
else()
  set(Q35_WITH_CUDA ON)
endif()

if(Q35_WITH_CUDA)
  set(CMAKE_CUDA_COMPILER "${Q35_CUDA_ROOT}/bin/nvcc")
  set(CUDAToolkit_ROOT "${Q35_CUDA_ROOT}")
  set(_archs "$ENV{QWEN35_CUDA_ARCHS}")
  if(QWEN35_CUDA_ARCHS)
    set(_archs "${QWEN35_CUDA_ARCHS}")
  endif()
  if(NOT _archs)
    set(_archs "80;90a")
  endif()
  string(REPLACE "," ";" _archs "${_archs}")
  string(REPLACE "sm_" "" _archs "${_archs}")
  set(CMAKE_CUDA_ARCHITECTURES "${_archs}")
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  # Quality gate: a kernel that spills registers or uses local memory fails the build.
  # QWEN35_ALLOW_SPILLS=1 turns the gate off for experiments.
  set(Q35_CUDA_FLAGS --expt-relaxed-constexpr -lineinfo)
  if("$ENV{QWEN35_PTXAS_VERBOSE}" STREQUAL "1")
    list(APPEND Q35_CUDA_FLAGS -Xptxas=-v)
  endif()
  if(NOT "$ENV{QWEN35_ALLOW_SPILLS}" STREQUAL "1")
    # One list, also read by tests/build/test_build_gates.py to prove the gate rejects a spilling kernel.
    file(STRINGS "${CMAKE_CURRENT_LIST_DIR}/ptxas_gate_flags.txt" _gate LIMIT_COUNT 1)
    list(APPEND Q35_CUDA_FLAGS "-Xptxas=${_gate}")
  endif()
  message(STATUS "qwen35_native: CUDA toolkit ${CUDAToolkit_VERSION} at ${Q35_CUDA_ROOT}, archs ${CMAKE_CUDA_ARCHITECTURES}")
endif()

# Headers for cuda_bf16.h / cuda_fp16.h in host (emulator) compilation: the toolkit's, else the wheel's.
if(Q35_CUDA_ROOT)
  set(Q35_CUDA_HEADERS "${Q35_CUDA_ROOT}/include")
elseif(Q35_TORCH_CUDA_INCLUDE AND EXISTS "${Q35_TORCH_CUDA_INCLUDE}/cuda_bf16.h")
  set(Q35_CUDA_HEADERS "${Q35_TORCH_CUDA_INCLUDE}")
else()
  message(FATAL_ERROR "qwen35_native: no CUDA headers found (need cuda_bf16.h): install the CUDA toolkit "
                      "or set CUDA_HOME")
endif()
