#!/usr/bin/env python3
"""Checks that the C++ and CUDA sources keep the layout .clang-format describes.

    check_format.py CLANG_FORMAT SOURCE_ROOT

Runs clang-format (version 16: older ones lay out requires-clauses differently) in dry-run mode over
include/, tests/, examples/ and bench/, and fails naming every file it would change. To fix them:
clang-format-16 -i FILE...
"""
import os
import subprocess
import sys

FOLDERS = ["include", "tests", "examples", "bench"]
ENDINGS = (".hpp", ".cpp", ".cuh", ".cu", ".h")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    clang_format, root = sys.argv[1], sys.argv[2]
    files = []
    for folder in FOLDERS:
        for directory, _, names in os.walk(os.path.join(root, folder)):
            files += [os.path.join(directory, n) for n in sorted(names) if n.endswith(ENDINGS)]
    unformatted = []
    for path in files:
        result = subprocess.run([clang_format, "--dry-run", "--Werror", "--style=file", path], cwd=root,
                                capture_output=True, text=True)
        if result.returncode != 0:
            unformatted.append(os.path.relpath(path, root))
    for path in unformatted:
        print(f"{path}: not laid out as .clang-format says; run: clang-format-16 -i {path}")
    print(f"format: {len(files)} files, {len(unformatted)} to reformat")
    sys.exit(1 if unformatted else 0)


if __name__ == "__main__":
    main()
