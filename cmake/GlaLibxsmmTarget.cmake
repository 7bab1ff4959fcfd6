# Defines the imported target gla::libxsmm (libxsmm's JIT small-GEMM kernels, located with pkg-config) and
# sets GLA_LIBXSMM_FOUND. Shared by the build (cmake/GlaAccelerators.cmake) and the installed glaConfig.cmake,
# so both link the same way.
#
# libxsmm ships static libraries whose GEMM frontends reference BLAS (sgemm_, dgemm_, sgemv_, dgemv_). gla only
# calls JIT kernels, which never reach them, so libxsmmnoblas's stubs satisfy the references without pulling in a
# (threaded) BLAS. It must follow libxsmm on the link line: pkg-config's own `libxsmmnoblas` module lists it
# first, which leaves the references unresolved with static archives, hence the explicit order here.
if(TARGET gla::libxsmm)
  set(GLA_LIBXSMM_FOUND TRUE)
  return()
endif()
set(GLA_LIBXSMM_FOUND FALSE)
find_package(PkgConfig QUIET)
if(NOT PkgConfig_FOUND)
  return()
endif()
pkg_check_modules(GLA_LIBXSMM_PC QUIET libxsmm)
if(NOT GLA_LIBXSMM_PC_FOUND)
  return()
endif()
find_library(GLA_LIBXSMM_NOBLAS_LIBRARY NAMES xsmmnoblas HINTS ${GLA_LIBXSMM_PC_LIBRARY_DIRS})
if(NOT GLA_LIBXSMM_NOBLAS_LIBRARY)
  return()
endif()
add_library(gla::libxsmm INTERFACE IMPORTED GLOBAL)
set_target_properties(gla::libxsmm PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "${GLA_LIBXSMM_PC_INCLUDE_DIRS}"
  INTERFACE_COMPILE_OPTIONS "${GLA_LIBXSMM_PC_CFLAGS_OTHER}"
  INTERFACE_LINK_LIBRARIES "${GLA_LIBXSMM_PC_LINK_LIBRARIES};${GLA_LIBXSMM_NOBLAS_LIBRARY}")
set(GLA_LIBXSMM_FOUND TRUE)
