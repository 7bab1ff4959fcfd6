# Packaging tests: install gla into the build tree, build a consumer with find_package, build it again with
# add_subdirectory, and (label slow) compile every public header on its own.
set(_pkg ${CMAKE_CURRENT_BINARY_DIR}/package)
set(_gen -G "${CMAKE_GENERATOR}")
add_test(NAME package_install
  COMMAND ${CMAKE_COMMAND} --install ${PROJECT_BINARY_DIR} --prefix ${_pkg}/install)
set_tests_properties(package_install PROPERTIES FIXTURES_SETUP gla_installed LABELS unit)

add_test(NAME package_find_package
  COMMAND ${CMAKE_COMMAND} -E env CMAKE_PREFIX_PATH=${_pkg}/install
          ${CMAKE_CTEST_COMMAND} --build-and-test ${CMAKE_CURRENT_SOURCE_DIR}/package/consumer ${_pkg}/find
          --build-generator ${CMAKE_GENERATOR} --build-options -DCMAKE_BUILD_TYPE=Release
          --test-command consumer)
set_tests_properties(package_find_package PROPERTIES FIXTURES_REQUIRED gla_installed LABELS unit)

add_test(NAME package_add_subdirectory
  COMMAND ${CMAKE_CTEST_COMMAND} --build-and-test ${CMAKE_CURRENT_SOURCE_DIR}/package/consumer ${_pkg}/subdir
          --build-generator ${CMAKE_GENERATOR}
          --build-options -DCMAKE_BUILD_TYPE=Release -DGLA_SOURCE_DIR=${PROJECT_SOURCE_DIR}
          --test-command consumer)
set_tests_properties(package_add_subdirectory PROPERTIES LABELS unit)

add_test(NAME package_headers_self_contained
  COMMAND ${CMAKE_CTEST_COMMAND} --build-and-test ${CMAKE_CURRENT_SOURCE_DIR}/package/consumer ${_pkg}/headers
          --build-generator ${CMAKE_GENERATOR} --build-makeprogram ${CMAKE_MAKE_PROGRAM}
          --build-options -DCMAKE_BUILD_TYPE=Debug -DGLA_SOURCE_DIR=${PROJECT_SOURCE_DIR} -DGLA_CHECK_HEADERS=ON
          --test-command consumer)
set_tests_properties(package_headers_self_contained PROPERTIES LABELS slow)
