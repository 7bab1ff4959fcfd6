# Optional accelerators, included once from the top-level CMakeLists.txt after gla::gla is defined.
#
# GLA_WITH_LIBXSMM: gla::detail::gemm (include/gla/detail/gemm.hpp) runs libxsmm's JIT kernels. When ON, gla::gla
#   carries GLA_HAVE_LIBXSMM=1 and links gla::libxsmm (cmake/GlaLibxsmmTarget.cmake) as INTERFACE usage
#   requirements, so add_subdirectory consumers get the same choice, and the installed glaConfig.cmake re-finds
#   libxsmm with pkg-config. Default: ON when pkg-config finds libxsmm.
# GLA_WITH_ONEDNN: recorded only for now; defines gla::onednn (oneDNN, with GLA_HAVE_ONEDNN=1) for the
#   benchmarks, whose f32 GEMM yardstick it is. gla::gla does not link it. Default: ON when oneDNN is found.

set(_gla_libxsmm_looked FALSE)
if(NOT DEFINED GLA_WITH_LIBXSMM OR GLA_WITH_LIBXSMM)  # an explicit OFF does not even look
  include(${CMAKE_CURRENT_LIST_DIR}/GlaLibxsmmTarget.cmake)
  set(_gla_libxsmm_looked TRUE)
endif()
option(GLA_WITH_LIBXSMM "Small matrix products (gla/detail/gemm.hpp) through libxsmm's JIT kernels" ${GLA_LIBXSMM_FOUND})
if(GLA_WITH_LIBXSMM)
  if(NOT GLA_LIBXSMM_FOUND)
    message(FATAL_ERROR "GLA_WITH_LIBXSMM=ON but libxsmm was not found (expected: the pkg-config module libxsmm "
                        "and the library xsmmnoblas beside it, e.g. from Debian's libxsmm-dev); install it or "
                        "configure with -DGLA_WITH_LIBXSMM=OFF to use Eigen for the small products")
  endif()
  target_link_libraries(gla INTERFACE gla::libxsmm)
  target_compile_definitions(gla INTERFACE GLA_HAVE_LIBXSMM=1)
  message(STATUS "gla: small products through libxsmm ${GLA_LIBXSMM_PC_VERSION} (GLA_WITH_LIBXSMM=ON)")
  # find_package(gla) on the build tree or an install re-finds libxsmm with this file (glaConfig.cmake).
  configure_file(${CMAKE_CURRENT_LIST_DIR}/GlaLibxsmmTarget.cmake ${PROJECT_BINARY_DIR}/GlaLibxsmmTarget.cmake COPYONLY)
  if(GLA_INSTALL)
    install(FILES ${CMAKE_CURRENT_LIST_DIR}/GlaLibxsmmTarget.cmake DESTINATION ${CMAKE_INSTALL_DATADIR}/cmake/gla)
  endif()
elseif(_gla_libxsmm_looked AND NOT GLA_LIBXSMM_FOUND)
  message(STATUS "gla: libxsmm not found (pkg-config module libxsmm): GLA_WITH_LIBXSMM=OFF, small products use Eigen")
else()
  message(STATUS "gla: GLA_WITH_LIBXSMM=OFF: small products use Eigen")
endif()
unset(_gla_libxsmm_looked)

# oneDNN. Debian's dnnl-config.cmake requires OpenCL's development files (its GPU runtime) and stops the
# configuration when they are missing, so find_package(dnnl) is tried only when OpenCL is there; otherwise the
# header and library are located directly (the CPU GEMM needs no OpenCL at build time).
set(_gla_onednn_looked FALSE)
if(NOT DEFINED GLA_WITH_ONEDNN OR GLA_WITH_ONEDNN)
  set(_gla_onednn_looked TRUE)
  set(GLA_ONEDNN_FOUND FALSE)
  if(NOT TARGET DNNL::dnnl)
    find_package(OpenCL QUIET)
    if(OpenCL_FOUND)
      find_package(dnnl CONFIG QUIET)
    endif()
  endif()
  if(TARGET DNNL::dnnl)
    set(GLA_ONEDNN_FOUND TRUE)
    set(_gla_onednn_link DNNL::dnnl)
  else()
    find_path(GLA_ONEDNN_INCLUDE_DIR NAMES oneapi/dnnl/dnnl.hpp)
    find_library(GLA_ONEDNN_LIBRARY NAMES dnnl)
    if(GLA_ONEDNN_INCLUDE_DIR AND GLA_ONEDNN_LIBRARY)
      set(GLA_ONEDNN_FOUND TRUE)
      set(_gla_onednn_link ${GLA_ONEDNN_LIBRARY})
    endif()
  endif()
endif()
option(GLA_WITH_ONEDNN "oneDNN for the benchmarks' GEMM yardstick (target gla::onednn; gla::gla does not use it yet)"
       ${GLA_ONEDNN_FOUND})
if(GLA_WITH_ONEDNN)
  if(NOT GLA_ONEDNN_FOUND)
    message(FATAL_ERROR "GLA_WITH_ONEDNN=ON but oneDNN was not found (CMake package dnnl, or oneapi/dnnl/dnnl.hpp "
                        "and libdnnl); install it (Debian: libdnnl-dev) or configure with -DGLA_WITH_ONEDNN=OFF")
  endif()
  if(NOT TARGET gla::onednn)
    add_library(gla::onednn INTERFACE IMPORTED GLOBAL)
    set_target_properties(gla::onednn PROPERTIES INTERFACE_LINK_LIBRARIES "${_gla_onednn_link}"
                                                 INTERFACE_COMPILE_DEFINITIONS GLA_HAVE_ONEDNN=1)
    if(GLA_ONEDNN_INCLUDE_DIR AND NOT TARGET DNNL::dnnl)
      set_target_properties(gla::onednn PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${GLA_ONEDNN_INCLUDE_DIR}")
    endif()
  endif()
  message(STATUS "gla: oneDNN found (GLA_WITH_ONEDNN=ON; benchmarks only)")
elseif(_gla_onednn_looked)
  message(STATUS "gla: oneDNN not found: GLA_WITH_ONEDNN=OFF (bench_small_gemm runs without its yardstick)")
else()
  message(STATUS "gla: GLA_WITH_ONEDNN=OFF")
endif()
unset(_gla_onednn_link)
unset(_gla_onednn_looked)
