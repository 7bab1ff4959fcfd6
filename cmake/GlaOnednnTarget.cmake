# Defines the imported target gla::onednn (oneDNN, with GLA_HAVE_ONEDNN=1) and sets GLA_ONEDNN_FOUND. Shared by
# the build (cmake/GlaAccelerators.cmake) and the installed glaConfig.cmake, so both find and link it the same way.
#
# Debian's dnnl-config.cmake requires OpenCL's development files (its GPU runtime) and stops the configuration
# when they are missing, so find_package(dnnl) is tried only when OpenCL is there; otherwise the header and
# library are located directly (the CPU matmul needs no OpenCL at build time).
if(TARGET gla::onednn)
  set(GLA_ONEDNN_FOUND TRUE)
  return()
endif()
set(GLA_ONEDNN_FOUND FALSE)
set(_gla_onednn_link "")
if(NOT TARGET DNNL::dnnl)
  find_package(OpenCL QUIET)
  if(OpenCL_FOUND)
    find_package(dnnl CONFIG QUIET)
  endif()
endif()
if(TARGET DNNL::dnnl)
  set(_gla_onednn_link DNNL::dnnl)
else()
  find_path(GLA_ONEDNN_INCLUDE_DIR NAMES oneapi/dnnl/dnnl.hpp)
  find_library(GLA_ONEDNN_LIBRARY NAMES dnnl)
  if(GLA_ONEDNN_INCLUDE_DIR AND GLA_ONEDNN_LIBRARY)
    set(_gla_onednn_link ${GLA_ONEDNN_LIBRARY})
  endif()
endif()
if(_gla_onednn_link)
  add_library(gla::onednn INTERFACE IMPORTED GLOBAL)
  set_target_properties(gla::onednn PROPERTIES INTERFACE_LINK_LIBRARIES "${_gla_onednn_link}"
                                               INTERFACE_COMPILE_DEFINITIONS GLA_HAVE_ONEDNN=1)
  if(GLA_ONEDNN_INCLUDE_DIR AND NOT TARGET DNNL::dnnl)
    set_target_properties(gla::onednn PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${GLA_ONEDNN_INCLUDE_DIR}")
  endif()
  set(GLA_ONEDNN_FOUND TRUE)
endif()
unset(_gla_onednn_link)
