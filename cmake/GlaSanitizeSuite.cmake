# Script (cmake -P) behind the ctest entry "sanitize_default_suite": configure, build and run the default
# suite with AddressSanitizer + UBSan in a sub-build. The settings are those of the "asan" preset in
# CMakePresets.json; keep the two alike. The packaging tests are left out (GLA_INSTALL=OFF): they build
# their own consumers without the sanitizers.
# Arguments: -DGLA_SOURCE_DIR= -DGLA_BINARY_DIR= -DGLA_CTEST_COMMAND= [-DGLA_GENERATOR=] [-DGLA_CXX_COMPILER=]
foreach(_v GLA_SOURCE_DIR GLA_BINARY_DIR GLA_CTEST_COMMAND)
  if(NOT ${_v})
    message(FATAL_ERROR "GlaSanitizeSuite.cmake: -D${_v}= is required")
  endif()
endforeach()
set(_configure ${CMAKE_COMMAND} -S ${GLA_SOURCE_DIR} -B ${GLA_BINARY_DIR}
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGLA_SANITIZE=ON -DGLA_INSTALL=OFF -DGLA_BUILD_BENCHMARKS=OFF)
if(GLA_GENERATOR)
  list(APPEND _configure -G ${GLA_GENERATOR})
endif()
if(GLA_CXX_COMPILER)
  list(APPEND _configure -DCMAKE_CXX_COMPILER=${GLA_CXX_COMPILER})
endif()

# A stack with every UBSan report (each one stops the test: -fno-sanitize-recover=all); leak checks on.
set(ENV{ASAN_OPTIONS} "detect_leaks=1")
set(ENV{UBSAN_OPTIONS} "print_stacktrace=1")

file(MAKE_DIRECTORY ${GLA_BINARY_DIR})
foreach(_step configure build test)
  if(_step STREQUAL "configure")
    set(_cmd ${_configure})
  elseif(_step STREQUAL "build")
    set(_cmd ${CMAKE_COMMAND} --build ${GLA_BINARY_DIR} -j 2)
  else()
    set(_cmd ${GLA_CTEST_COMMAND} -LE "slow|sanitize|fuzz" -j2 --output-on-failure)
  endif()
  message(STATUS "sanitize: ${_step}")
  execute_process(COMMAND ${_cmd} WORKING_DIRECTORY ${GLA_BINARY_DIR} RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "sanitize: ${_step} failed (${_rc})")
  endif()
endforeach()
