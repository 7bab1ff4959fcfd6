# Optional accelerators, included once from the top-level CMakeLists.txt after gla::gla is defined.
#
# GLA_WITH_LIBXSMM: gla::detail::gemm (include/gla/detail/gemm.hpp) runs libxsmm's JIT kernels. When ON, gla::gla
#   carries GLA_HAVE_LIBXSMM=1 and links gla::libxsmm (cmake/GlaLibxsmmTarget.cmake) as INTERFACE usage
#   requirements, so add_subdirectory consumers get the same choice, and the installed glaConfig.cmake re-finds
#   libxsmm with pkg-config. Default: ON when pkg-config finds libxsmm.
# GLA_WITH_ONEDNN: the layer's projections (include/gla/detail/packed_linear.hpp) run oneDNN's matmul. When ON,
#   gla::gla links gla::onednn (cmake/GlaOnednnTarget.cmake), which carries GLA_HAVE_ONEDNN=1, and the installed
#   glaConfig.cmake re-finds oneDNN with the same file. It is also the benchmarks' GEMM yardstick. Default: ON
#   when oneDNN is found.

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

# oneDNN: cmake/GlaOnednnTarget.cmake defines gla::onednn (shared with the installed glaConfig.cmake).
set(_gla_onednn_looked FALSE)
if(NOT DEFINED GLA_WITH_ONEDNN OR GLA_WITH_ONEDNN)
  set(_gla_onednn_looked TRUE)
  include(${CMAKE_CURRENT_LIST_DIR}/GlaOnednnTarget.cmake)
endif()
option(GLA_WITH_ONEDNN "The layer's projections (gla/detail/packed_linear.hpp) through oneDNN's matmul" ${GLA_ONEDNN_FOUND})
if(GLA_WITH_ONEDNN)
  if(NOT GLA_ONEDNN_FOUND)
    message(FATAL_ERROR "GLA_WITH_ONEDNN=ON but oneDNN was not found (CMake package dnnl, or oneapi/dnnl/dnnl.hpp "
                        "and libdnnl); install it (Debian: libdnnl-dev) or configure with -DGLA_WITH_ONEDNN=OFF")
  endif()
  target_link_libraries(gla INTERFACE gla::onednn)  # carries GLA_HAVE_ONEDNN=1
  message(STATUS "gla: the layer's projections through oneDNN (GLA_WITH_ONEDNN=ON)")
  configure_file(${CMAKE_CURRENT_LIST_DIR}/GlaOnednnTarget.cmake ${PROJECT_BINARY_DIR}/GlaOnednnTarget.cmake COPYONLY)
  if(GLA_INSTALL)
    install(FILES ${CMAKE_CURRENT_LIST_DIR}/GlaOnednnTarget.cmake DESTINATION ${CMAKE_INSTALL_DATADIR}/cmake/gla)
  endif()
elseif(_gla_onednn_looked)
  message(STATUS "gla: oneDNN not found: GLA_WITH_ONEDNN=OFF (the layer's projections use Eigen)")
else()
  message(STATUS "gla: GLA_WITH_ONEDNN=OFF: the layer's projections use Eigen")
endif()
unset(_gla_onednn_looked)

# GLA_WITH_AMX: gemm()'s bfloat16 products on Intel AMX tiles (include/gla/detail/gemm_amx.hpp). No package: the
# code is compiled wherever the consumer's target has AMX (-march=native on Sapphire Rapids or later) and runs where
# the CPU and Linux allow it. OFF gives gla::gla GLA_GEMM_NO_AMX=1, so its users (and the Eigen-only CI
# configuration) take the other backends for bfloat16 on any CPU.
option(GLA_WITH_AMX "bfloat16 small products on AMX tiles where the target CPU has them" ON)
if(NOT GLA_WITH_AMX)
  target_compile_definitions(gla INTERFACE GLA_GEMM_NO_AMX=1)
  message(STATUS "gla: GLA_WITH_AMX=OFF: bfloat16 small products never use AMX tiles")
endif()
