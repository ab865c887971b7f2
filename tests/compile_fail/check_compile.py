#!/usr/bin/env python3
"""Compiles one C++ file and checks the outcome the file declares in its comments.

    check_compile.py SOURCE -- COMPILER [FLAGS...]

A file that must not compile says what the compiler's output must contain, one text per line:
    // expect-error: Conv2D<16, 5>
and may bound the number of errors (so a failed check cannot hide behind a cascade):
    // expect-max-errors: 1
A control file that must compile says
    // expect: compiles
Exits 0 when the outcome is the declared one; prints the first error line either way.
"""
import re
import subprocess
import sys


def main(argv):
    if '--' not in argv or argv.index('--') != 1:
        print('usage: check_compile.py SOURCE -- COMPILER [FLAGS...]', file=sys.stderr)
        return 2
    source, command = argv[0], argv[2:]
    with open(source, encoding='utf-8') as f:
        text = f.read()
    expected = re.findall(r'^// expect-error: (.+?)\s*$', text, re.MULTILINE)
    max_errors = re.search(r'^// expect-max-errors: (\d+)\s*$', text, re.MULTILINE)
    must_compile = re.search(r'^// expect: compiles\s*$', text, re.MULTILINE) is not None
    if must_compile == bool(expected):
        print(f'{source}: declare either "// expect: compiles" or at least one "// expect-error: TEXT"')
        return 2

    result = subprocess.run(command + [source], capture_output=True, text=True)
    output = result.stdout + result.stderr
    lines = output.splitlines()
    errors = [line for line in lines if re.search(r'\berror\b:', line)]
    if errors:
        # The instantiation that led to the first error names the types involved (the layer and the shape).
        first = lines.index(errors[0])
        context = [line for line in lines[:first] if 'In instantiation of' in line]
        if context:
            print('in:', context[-1].strip())
        print('first error:', errors[0])

    if must_compile:
        if result.returncode == 0:
            print(f'{source} compiles, as it must')
            return 0
        print(f'FAIL: {source} must compile but does not:\n{output[:4000]}')
        return 1

    if result.returncode == 0:
        print(f'FAIL: {source} compiles, but must not')
        return 1
    missing = [text for text in expected if text not in output]
    if missing:
        print(f'FAIL: the compiler output lacks {missing}:\n{output[:4000]}')
        return 1
    if max_errors and len(errors) > int(max_errors.group(1)):
        print(f'FAIL: {len(errors)} errors, at most {max_errors.group(1)} expected:\n' + '\n'.join(errors[:20]))
        return 1
    print(f'{source} fails to compile with the expected message ({len(errors)} error(s))')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
