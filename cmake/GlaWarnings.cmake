# Warnings and flags for the library's own targets (tests, benchmarks, examples); never for consumers.
option(GLA_NATIVE "Compile the project's own targets with -march=native" ON)

# -Wno-uninitialized: GCC 12 reports its own AVX-512 intrinsics (inlined through Eigen with -march=native)
# as used uninitialized; -Wno-maybe-uninitialized likewise for Eigen's packet code.
set(GLA_WARNING_FLAGS -Wall -Wextra -Wpedantic -Wshadow -Wno-maybe-uninitialized -Wno-uninitialized)

function(gla_project_options target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE ${GLA_WARNING_FLAGS})
  endif()
  if(GLA_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  endif()
  if(GLA_USE_OPENMP AND OpenMP_CXX_FOUND)
    target_link_libraries(${target} PRIVATE OpenMP::OpenMP_CXX)
  endif()
endfunction()
