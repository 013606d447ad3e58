# Source lists. Kernel .cu files are compiled twice: by nvcc for the GPU and, through a generated one-line
# wrapper, by the host compiler with Q35_EMULATE for the SIMT emulator (runtime: csrc/emu -> libq35_emu.so).
file(GLOB_RECURSE Q35_KERNEL_SOURCES CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/csrc/kernels/*.cu")
file(GLOB_RECURSE Q35_EMU_RUNTIME_SOURCES CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/csrc/emu/*.cpp")
file(GLOB_RECURSE Q35_TORCH_GLUE_SOURCES CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/csrc/torch/*.cpp")
# Test-only kernels of the emulator's own suite (tests/emu/kernels) and their torch glue: qwen35_native._emu_tests.
file(GLOB Q35_TEST_KERNEL_SOURCES CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/tests/emu/kernels/*.cu")
file(GLOB Q35_TEST_GLUE_SOURCES CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/tests/emu/kernels/*.cpp")

# q35_emulated_sources(<out-var> <root> <tag> <sources...>): one wrapper .cpp per .cu under <root>.
function(q35_emulated_sources out root tag)
  set(_wrappers "")
  foreach(src ${ARGN})
    file(RELATIVE_PATH rel "${root}" "${src}")
    string(REPLACE "/" "__" flat "${rel}")
    set(w "${CMAKE_CURRENT_BINARY_DIR}/emu_wrappers/${tag}/${flat}.cpp")
    set(content "// generated: ${rel} compiled for the SIMT emulator\n#include \"${src}\"\n")
    if(EXISTS "${w}")
      file(READ "${w}" old)
    else()
      set(old "")
    endif()
    if(NOT old STREQUAL content)
      file(WRITE "${w}" "${content}")
    endif()
    list(APPEND _wrappers "${w}")
  endforeach()
  set(${out} ${_wrappers} PARENT_SCOPE)
endfunction()

# Flags of every kernel library compiled for the emulator. Stack-clash protection makes a frame larger than a
# page probe it page by page, so a stack overflow always lands in the fiber's guard page.
function(q35_emulated_kernel_library target)
  add_library(${target} STATIC ${ARGN})
  target_compile_definitions(${target} PRIVATE Q35_EMULATE=1)
  target_compile_options(${target} PRIVATE -O2 -fno-strict-aliasing -fstack-clash-protection -Wno-unknown-pragmas)
  target_link_libraries(${target} PUBLIC q35_emu)
endfunction()

# The shared libstdc++ (libstdc++.so.6, the one torch uses), named by its path on the link line of a module. A plain
# -lstdc++ takes the static libstdc++.a where the toolchain has no libstdc++.so development link, or where
# -static-libstdc++ comes in through the environment's flags: the module then carries a second copy of libstdc++ beside
# torch's, half of it interposed by the first, and crashed on the first integer formatted into an error message (the
# H200 machine of 2026-11-28, g++ 13.3: every TORCH_CHECK with a number segfaulted). Named first, the shared library
# resolves every libstdc++ symbol, so nothing is taken from the archive. tests/build/test_wheel.py checks the result.
execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libstdc++.so.6 OUTPUT_VARIABLE Q35_LIBSTDCXX
                OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT IS_ABSOLUTE "${Q35_LIBSTDCXX}" OR NOT EXISTS "${Q35_LIBSTDCXX}")
  set(Q35_LIBSTDCXX "")
endif()
function(q35_link_shared_libstdcxx target)
  if(Q35_LIBSTDCXX)
    target_link_libraries(${target} PRIVATE "${Q35_LIBSTDCXX}")
  endif()
endfunction()

# A Python extension module of the package that links torch (the op glue of _C and of _emu_tests).
function(q35_torch_module target)
  Python_add_library(${target} MODULE WITH_SOABI ${ARGN})
  q35_link_shared_libstdcxx(${target})
  target_include_directories(${target} PRIVATE ${Q35_INCLUDE} ${Q35_TORCH_INCLUDE_DIRS} ${Q35_CUDA_HEADERS})
  target_compile_definitions(${target} PRIVATE _GLIBCXX_USE_CXX11_ABI=${Q35_TORCH_CXX11_ABI}
                                               TORCH_EXTENSION_NAME=${target})
  target_compile_options(${target} PRIVATE -O2 -Wno-unknown-pragmas)
  target_link_libraries(${target} PRIVATE ${Q35_TORCH_CPU_LIBS})
  if(Q35_WITH_CUDA)
    target_compile_definitions(${target} PRIVATE Q35_WITH_CUDA=1 USE_C10D_NCCL)
    target_link_libraries(${target} PRIVATE ${Q35_TORCH_CUDA_LIBS} CUDA::cudart)
  endif()
  # torch (and the CUDA runtime wheel) are loaded by `import torch` first; libq35_emu.so sits next to the module.
  set_target_properties(${target} PROPERTIES
    INSTALL_RPATH "$ORIGIN;$ORIGIN/../torch/lib;$ORIGIN/../nvidia/cu13/lib"
    BUILD_WITH_INSTALL_RPATH OFF)
  install(TARGETS ${target} LIBRARY DESTINATION qwen35_native)
  if(Q35_INPLACE)  # make dev: the module next to the Python sources so PYTHONPATH=python works
    add_custom_command(TARGET ${target} POST_BUILD
      COMMAND ${CMAKE_COMMAND} -E copy "$<TARGET_FILE:${target}>" "${CMAKE_CURRENT_SOURCE_DIR}/python/qwen35_native/")
  endif()
endfunction()
