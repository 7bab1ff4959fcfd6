# Install the headers and a relocatable package: find_package(gla) then target_link_libraries(... gla::gla).
include(CMakePackageConfigHelpers)
install(DIRECTORY include/gla DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS gla EXPORT glaTargets)
install(EXPORT glaTargets NAMESPACE gla:: DESTINATION ${CMAKE_INSTALL_DATADIR}/cmake/gla)
configure_package_config_file(cmake/glaConfig.cmake.in "${PROJECT_BINARY_DIR}/glaConfig.cmake"
  INSTALL_DESTINATION ${CMAKE_INSTALL_DATADIR}/cmake/gla)
# Header-only: the package fits any architecture.
write_basic_package_version_file("${PROJECT_BINARY_DIR}/glaConfigVersion.cmake"
  COMPATIBILITY SameMajorVersion ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/glaConfig.cmake" "${PROJECT_BINARY_DIR}/glaConfigVersion.cmake"
  DESTINATION ${CMAKE_INSTALL_DATADIR}/cmake/gla)
