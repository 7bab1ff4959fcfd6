# Warnings and flags for the library's own targets (tests, benchmarks, examples); never for consumers.
function(gla_project_options target)
  target_compile_options(${target} PRIVATE
    $<$<CXX_COMPILER_ID:GNU,Clang,AppleClang>:-Wall -Wextra -Wpedantic -Wshadow -Wno-maybe-uninitialized
      # GCC 12 reports its own AVX-512 intrinsics (inlined through Eigen with -march=native) as uninitialized.
      -Wno-uninitialized>)
  if(GLA_NATIVE)
    target_compile_options(${target} PRIVATE -march=native)
  endif()
  if(GLA_USE_OPENMP AND OpenMP_CXX_FOUND)
    target_link_libraries(${target} PRIVATE OpenMP::OpenMP_CXX)
  endif()
endfunction()
option(GLA_NATIVE "Compile the project's own targets with -march=native" ON)
