# Warnings and flags for the library's own targets (tests, benchmarks, examples); never for consumers.
# OpenMP and threads are not added here: the targets get them from gla::gla, as consumers do.
option(GLA_NATIVE "Compile the project's own targets with -march=native" ON)
option(GLA_SANITIZE "Build the project's own targets with AddressSanitizer + UBSan, stopping at the first error" OFF)

set(GLA_WARNING_FLAGS -Wall -Wextra -Wpedantic -Wshadow
  # GCC only (clang knows neither as needed here): GCC 12 reports its own AVX-512 intrinsics, inlined through
  # Eigen with -march=native, as used uninitialized; -Wno-maybe-uninitialized likewise for Eigen's packet code.
  $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>
  $<$<CXX_COMPILER_ID:GNU>:-Wno-uninitialized>)
set(GLA_SANITIZE_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)

function(gla_project_options target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE ${GLA_WARNING_FLAGS})
  endif()
  if(GLA_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  endif()
  if(GLA_SANITIZE)
    target_compile_options(${target} PRIVATE ${GLA_SANITIZE_FLAGS})
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()
