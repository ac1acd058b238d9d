#!/usr/bin/env python3
"""Writes the package's debian/copyright (DEP-5): Baton itself, the Swift runtime and
Foundation linked statically, and every Swift package of the release build (its resolved
version and the license its checkout carries).

  copyright.py SCRATCH_PATH > copyright
"""
import json
import os
import sys

HEADER = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: baton
Comment: batond, batonctl and baton-fence-keeper are linked statically with the Swift
 standard library, Foundation and the Swift packages listed below (resolved versions of the
 build). Baton itself has no license file yet: its authors keep all rights until one is chosen.

Files: *
Copyright: the Baton authors
License: none
 No license has been granted yet; all rights reserved by the Baton authors.

Files: usr/bin/* usr/libexec/baton/*
Copyright: Apple Inc. and the Swift project authors
Comment: Swift standard library, Foundation and Dispatch (linked statically).
License: Apache-2.0 with Runtime Library Exception
"""

APACHE = """License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file
 except in compliance with the License. You may obtain a copy of the License at
 https://www.apache.org/licenses/LICENSE-2.0
 .
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
"""

EXCEPTION = """License: Apache-2.0 with Runtime Library Exception
 Licensed under the Apache License, Version 2.0 (see /usr/share/common-licenses/Apache-2.0),
 with the Runtime Library Exception: as an exception, if you use this Software to compile
 your source code and portions of this Software are embedded into the binary product as a
 result, you may redistribute such product without providing attribution as would otherwise
 be required by Sections 4(a), 4(b) and 4(d) of the License.
"""


def license_of(checkout):
    for name in ("LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING"):
        path = os.path.join(checkout, name)
        if os.path.exists(path):
            text = open(path, encoding="utf-8", errors="replace").read()
            if "Apache License" in text and "Runtime Library Exception" in text:
                return "Apache-2.0 with Runtime Library Exception", None
            if "Apache License" in text:
                return "Apache-2.0", None
            if "Permission is hereby granted, free of charge" in text:
                return "Expat", text
            if "Redistribution and use in source and binary forms" in text:
                return "BSD", text
            return "other", text
    return "unknown", None


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    scratch = argv[1]
    state = json.load(open(os.path.join(scratch, "workspace-state.json")))
    out = [HEADER]
    texts = {}
    for dependency in sorted(state["object"]["dependencies"], key=lambda d: d["packageRef"]["identity"]):
        reference = dependency["packageRef"]
        checkout = os.path.join(scratch, "checkouts", dependency.get("subpath", reference["identity"]))
        version = dependency["state"].get("checkoutState", {}).get("version") or "unknown"
        name, text = license_of(checkout)
        if name in ("other", "BSD", "unknown"):
            name = "%s-%s" % (name, reference["identity"])
        out.append("Files: usr/bin/* usr/libexec/baton/*\nCopyright: the authors of %s\nComment: %s %s, %s\nLicense: %s\n"
                   % (reference["identity"], reference["location"], version, "linked statically where the binaries use it", name))
        if text and name not in texts:
            texts[name] = text
    out.append(APACHE)
    out.append(EXCEPTION)
    for name, text in texts.items():
        body = "\n".join(" " + line if line.strip() else " ." for line in text.strip().split("\n"))
        out.append("License: %s\n%s\n" % (name, body))
    sys.stdout.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
