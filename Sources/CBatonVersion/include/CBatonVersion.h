#ifndef C_BATON_VERSION_H
#define C_BATON_VERSION_H

/// Baton's version as this build was made: BATON_VERSION from the environment of `swift build`
/// (scripts/package sets it from the git tag/commit), else the base version in version.c.
const char *baton_version_string(void);

#endif
