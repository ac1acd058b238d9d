#include "CBatonVersion.h"

// The one source of Baton's version. Package.swift defines BATON_VERSION for this target when
// `swift build` runs with BATON_VERSION in its environment (scripts/package does, with the
// version it derives from `git describe`); a plain build reports the base version below, which
// scripts/package also reads (keep the line's shape: #define BATON_BASE_VERSION "X.Y.Z").
#define BATON_BASE_VERSION "0.1.0"

#ifndef BATON_VERSION
#define BATON_VERSION BATON_BASE_VERSION
#endif

const char *baton_version_string(void) {
    return BATON_VERSION;
}
