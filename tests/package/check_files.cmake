# cmake -DPREFIX=<install prefix> -DFILES=<paths relative to it, separated by |> -P check_files.cmake: fails naming every
# file the install step did not put there.
string(REPLACE "|" ";" FILES "${FILES}")
set(_missing "")
foreach(_f IN LISTS FILES)
  if(NOT EXISTS "${PREFIX}/${_f}")
    list(APPEND _missing "${_f}")
  endif()
endforeach()
if(_missing)
  message(FATAL_ERROR "not installed under ${PREFIX}: ${_missing}")
endif()
list(LENGTH FILES _n)
message(STATUS "all ${_n} files installed under ${PREFIX}")
