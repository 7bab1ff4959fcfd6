#pragma once
/// gla/version.hpp: the library's version. CMake's project(VERSION) must agree with these numbers (the
/// configure step checks it), so the installed headers, the CMake package and gla.pc report one version.

#define GLA_VERSION_MAJOR 0
#define GLA_VERSION_MINOR 2
#define GLA_VERSION_PATCH 0
#define GLA_VERSION_STRING "0.2.0"

/// One comparable number: 10000 * major + 100 * minor + patch (0.2.0 is 200), e.g. `#if GLA_VERSION >= 200`.
#define GLA_VERSION (GLA_VERSION_MAJOR * 10000 + GLA_VERSION_MINOR * 100 + GLA_VERSION_PATCH)
