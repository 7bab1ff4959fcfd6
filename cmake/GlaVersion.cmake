# include/gla/version.hpp is committed (so plain `-I include` users have it too) and must carry the version of
# project(): stop the configure step when the two disagree.
file(STRINGS "${PROJECT_SOURCE_DIR}/include/gla/version.hpp" _gla_version_defines
  REGEX "^#define GLA_VERSION_(MAJOR|MINOR|PATCH|STRING) ")
foreach(_part MAJOR MINOR PATCH STRING)
  set(_gla_header_${_part} "")
  foreach(_line IN LISTS _gla_version_defines)
    if(_line MATCHES "^#define GLA_VERSION_${_part} +\"?([0-9.]+)\"?$")
      set(_gla_header_${_part} "${CMAKE_MATCH_1}")
    endif()
  endforeach()
endforeach()
set(_gla_header_version "${_gla_header_MAJOR}.${_gla_header_MINOR}.${_gla_header_PATCH}")
if(NOT _gla_header_version STREQUAL PROJECT_VERSION OR NOT _gla_header_STRING STREQUAL PROJECT_VERSION)
  message(FATAL_ERROR "gla: include/gla/version.hpp says ${_gla_header_version} (GLA_VERSION_STRING "
    "\"${_gla_header_STRING}\") but project() says ${PROJECT_VERSION}: update both together.")
endif()
unset(_gla_version_defines)
unset(_gla_header_version)
foreach(_part MAJOR MINOR PATCH STRING)
  unset(_gla_header_${_part})
endforeach()
