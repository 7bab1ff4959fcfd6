# Install the headers and a relocatable package: find_package(gla) then target_link_libraries(... gla::gla),
# or pkg-config --cflags --libs gla.
include(CMakePackageConfigHelpers)
install(DIRECTORY include/gla DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS gla EXPORT glaTargets)
install(EXPORT glaTargets NAMESPACE gla:: DESTINATION ${CMAKE_INSTALL_DATADIR}/cmake/gla)
configure_package_config_file(cmake/glaConfig.cmake.in "${PROJECT_BINARY_DIR}/glaConfig.cmake"
  INSTALL_DESTINATION ${CMAKE_INSTALL_DATADIR}/cmake/gla)
# Header-only: the package fits any architecture. Before 1.0 a minor release may change the API, so a
# request for 0.2 accepts 0.2.x only; from 1.0 on, any later release of the same major version.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(_gla_compatibility SameMinorVersion)
else()
  set(_gla_compatibility SameMajorVersion)
endif()
write_basic_package_version_file("${PROJECT_BINARY_DIR}/glaConfigVersion.cmake"
  COMPATIBILITY ${_gla_compatibility} ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/glaConfig.cmake" "${PROJECT_BINARY_DIR}/glaConfigVersion.cmake"
  DESTINATION ${CMAKE_INSTALL_DATADIR}/cmake/gla)

# pkg-config: the same dependencies as gla::gla. The prefix is found from the .pc file's own location, so the
# file stays right when the tree is installed elsewhere (cmake --install --prefix, DESTDIR, a moved tree).
set(GLA_PC_REQUIRES "eigen3 >= 3.4")
if(GLA_WITH_NLOHMANN_JSON)
  string(APPEND GLA_PC_REQUIRES ", nlohmann_json >= 3.11")
endif()
set(GLA_PC_CFLAGS "-I\${includedir}")
set(GLA_PC_LIBS "${CMAKE_THREAD_LIBS_INIT}")
if(GLA_WITH_OPENMP)
  string(REPLACE ";" " " _gla_omp_flags "${OpenMP_CXX_FLAGS}")
  string(APPEND GLA_PC_CFLAGS " ${_gla_omp_flags}")
  string(APPEND GLA_PC_LIBS " ${_gla_omp_flags}")
endif()
string(STRIP "${GLA_PC_LIBS}" GLA_PC_LIBS)
if(IS_ABSOLUTE "${CMAKE_INSTALL_DATADIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(GLA_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(GLA_PC_INCLUDEDIR "${CMAKE_INSTALL_FULL_INCLUDEDIR}")
else()
  file(RELATIVE_PATH _gla_pc_up "/prefix/${CMAKE_INSTALL_DATADIR}/pkgconfig" "/prefix")
  string(REGEX REPLACE "/$" "" _gla_pc_up "${_gla_pc_up}")
  set(GLA_PC_PREFIX "\${pcfiledir}/${_gla_pc_up}")
  set(GLA_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file(cmake/gla.pc.in "${PROJECT_BINARY_DIR}/gla.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/gla.pc" DESTINATION ${CMAKE_INSTALL_DATADIR}/pkgconfig)

install(FILES LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR})
