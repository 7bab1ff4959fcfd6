# Packaging tests: install gla into the build tree, check what was installed, build a consumer with
# find_package, with add_subdirectory and with pkg-config, and (label slow) compile every public header on
# its own. The consumers check the version and that they got OpenMP exactly when this build did.
set(_pkg ${CMAKE_CURRENT_BINARY_DIR}/package)
if(GLA_WITH_OPENMP)
  set(_expect_openmp 1)
else()
  set(_expect_openmp 0)
endif()
set(_expect -DGLA_EXPECT_VERSION=${PROJECT_VERSION} -DGLA_EXPECT_OPENMP=${_expect_openmp})

add_test(NAME package_install
  COMMAND ${CMAKE_COMMAND} --install ${PROJECT_BINARY_DIR} --prefix ${_pkg}/install)
set_tests_properties(package_install PROPERTIES FIXTURES_SETUP gla_installed LABELS unit)

add_test(NAME package_install_contents
  COMMAND ${CMAKE_COMMAND} -DPREFIX=${_pkg}/install
          "-DFILES=${CMAKE_INSTALL_INCLUDEDIR}/gla/gla.hpp|${CMAKE_INSTALL_INCLUDEDIR}/gla/version.hpp|${CMAKE_INSTALL_DATADIR}/cmake/gla/glaConfig.cmake|${CMAKE_INSTALL_DATADIR}/cmake/gla/glaConfigVersion.cmake|${CMAKE_INSTALL_DATADIR}/pkgconfig/gla.pc|${CMAKE_INSTALL_DOCDIR}/LICENSE"
          -P ${CMAKE_CURRENT_SOURCE_DIR}/package/check_files.cmake)
set_tests_properties(package_install_contents PROPERTIES FIXTURES_REQUIRED gla_installed LABELS unit)

add_test(NAME package_find_package
  COMMAND ${CMAKE_COMMAND} -E env CMAKE_PREFIX_PATH=${_pkg}/install
          ${CMAKE_CTEST_COMMAND} --build-and-test ${CMAKE_CURRENT_SOURCE_DIR}/package/consumer ${_pkg}/find
          --build-generator ${CMAKE_GENERATOR}
          --build-options -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER} ${_expect}
          --test-command consumer)
set_tests_properties(package_find_package PROPERTIES FIXTURES_REQUIRED gla_installed LABELS unit)

add_test(NAME package_add_subdirectory
  COMMAND ${CMAKE_CTEST_COMMAND} --build-and-test ${CMAKE_CURRENT_SOURCE_DIR}/package/consumer ${_pkg}/subdir
          --build-generator ${CMAKE_GENERATOR}
          --build-options -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}
                          -DGLA_SOURCE_DIR=${PROJECT_SOURCE_DIR} ${_expect}
          --test-command consumer)
set_tests_properties(package_add_subdirectory PROPERTIES LABELS unit)

# pkg-config: compile the same consumer with nothing but `pkg-config --cflags --libs gla` and the compiler.
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  add_test(NAME package_pkg_config
    COMMAND ${CMAKE_COMMAND} -DPKG_CONFIG=${PKG_CONFIG_EXECUTABLE} -DPREFIX=${_pkg}/install
            -DPC_DIR=${_pkg}/install/${CMAKE_INSTALL_DATADIR}/pkgconfig -DCXX=${CMAKE_CXX_COMPILER}
            -DSOURCE_DIR=${CMAKE_CURRENT_SOURCE_DIR}/package/consumer -DBINARY_DIR=${_pkg}/pkg-config
            ${_expect} -P ${CMAKE_CURRENT_SOURCE_DIR}/package/pkg_config_consumer.cmake)
  set_tests_properties(package_pkg_config PROPERTIES FIXTURES_REQUIRED gla_installed LABELS unit)
else()
  message(STATUS "gla: pkg-config not found, so the package_pkg_config test is left out "
    "(Debian/Ubuntu: apt-get install pkg-config)")
endif()

add_test(NAME package_headers_self_contained
  COMMAND ${CMAKE_CTEST_COMMAND} --build-and-test ${CMAKE_CURRENT_SOURCE_DIR}/package/consumer ${_pkg}/headers
          --build-generator ${CMAKE_GENERATOR} --build-makeprogram ${CMAKE_MAKE_PROGRAM}
          --build-options -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}
                          -DGLA_SOURCE_DIR=${PROJECT_SOURCE_DIR} -DGLA_CHECK_HEADERS=ON
          --test-command consumer)
set_tests_properties(package_headers_self_contained PROPERTIES LABELS slow)
