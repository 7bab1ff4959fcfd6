# cmake -DPKG_CONFIG= -DPC_DIR=<dir of gla.pc> -DCXX= -DSOURCE_DIR=<consumer sources> -DBINARY_DIR=
#       -DGLA_EXPECT_VERSION= -DGLA_EXPECT_OPENMP=0|1 -P pkg_config_consumer.cmake
# Builds the consumer as a Makefile user would: the compiler plus `pkg-config --cflags --libs gla`, then runs it.
set(ENV{PKG_CONFIG_PATH} "${PC_DIR}")

function(run_checked out_var)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "failed (${_rc}): ${ARGN}\n${_out}\n${_err}")
  endif()
  set(${out_var} "${_out}" PARENT_SCOPE)
endfunction()

run_checked(version ${PKG_CONFIG} --modversion gla)
if(NOT version STREQUAL GLA_EXPECT_VERSION)
  message(FATAL_ERROR "pkg-config --modversion gla says '${version}', expected ${GLA_EXPECT_VERSION}")
endif()
run_checked(cflags ${PKG_CONFIG} --cflags gla)
run_checked(libs ${PKG_CONFIG} --libs gla)
message(STATUS "pkg-config gla ${version}: --cflags ${cflags} --libs ${libs}")
separate_arguments(cflags UNIX_COMMAND "${cflags}")
separate_arguments(libs UNIX_COMMAND "${libs}")

file(MAKE_DIRECTORY ${BINARY_DIR})
run_checked(build_log ${CXX} -std=c++17 -O2 ${cflags}
  "-DGLA_EXPECT_VERSION=\"${GLA_EXPECT_VERSION}\"" -DGLA_EXPECT_OPENMP=${GLA_EXPECT_OPENMP}
  ${SOURCE_DIR}/main.cpp ${SOURCE_DIR}/second_tu.cpp -o ${BINARY_DIR}/consumer ${libs})
run_checked(run_log ${BINARY_DIR}/consumer)
message(STATUS "${run_log}")
