#!/usr/bin/env python3
"""Installs pnn into a temporary prefix and builds the projects of README.md's "Use pnn in your project"
against it, with the commands the README gives, then runs each program (tests/packaging/main.cpp):

    check_packaging.py SOURCE_ROOT

  1. pnn itself: meson setup with --prefix=TMP/prefix (its own programs off), meson install.
  2. CMake: cmake_consumer/ with find_package(pnn CONFIG REQUIRED), -DCMAKE_PREFIX_PATH=TMP/prefix.
  3. Meson, pnn as a subproject: meson_consumer/ with subprojects/pnn a link to SOURCE_ROOT.
  4. Meson, the installed pnn through pkg-config: meson_consumer/ without subprojects/.
  5. A plain compiler command with $(pkg-config --cflags --libs pnn).

Each consumer is copied out of the source tree, and each build is checked to have read pnn's headers from
where it should (the prefix; the subproject for 3), so a build that silently used the source tree, or
another installed pnn, fails. Exits 77 (skipped) when cmake is missing, naming it; 1 on any failure.
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# The options that keep pnn's own programs out of an installation build (README.md gives the same).
PNN_INSTALL_OPTIONS = ['--libdir=lib', '-Dtests=false', '-Dexamples=false', '-Dbench=disabled', '-Dcuda=disabled',
                       '-Dmpi=disabled']


class Failure(Exception):
    pass


def run(command, cwd, env=None, shell=False):
    """Runs a command, echoing it; raises Failure with its output when it fails."""
    shown = command if shell else ' '.join(command)
    print(f'$ (cd {cwd} && {shown})', flush=True)
    result = subprocess.run(command, cwd=cwd, env=env, shell=shell, capture_output=True, text=True)
    if result.returncode != 0:
        raise Failure(f'{shown}\nexited {result.returncode} in {cwd}:\n{result.stdout}{result.stderr}')
    return result.stdout


def environment(**changes):
    """This process's environment without what could point a build at another pnn, plus `changes`."""
    env = {k: v for k, v in os.environ.items() if k not in ('CMAKE_PREFIX_PATH', 'PKG_CONFIG_PATH', 'CPATH',
                                                            'CPLUS_INCLUDE_PATH', 'pnn_DIR', 'pnn_ROOT')}
    env.update(changes)
    return env


def copy_consumer(name, destination):
    """A consumer project as a user would have it: its build files and main.cpp, outside pnn's tree."""
    shutil.copytree(os.path.join(HERE, name), destination)
    shutil.copy(os.path.join(HERE, 'main.cpp'), destination)
    return destination


def run_consumer(binary, cwd):
    output = run([binary], cwd)
    if 'pnn consumer: ok' not in output:
        raise Failure(f'{binary} did not report success:\n{output}')
    print(output.strip())


def check_headers_from(build, expected_root, forbidden_roots):
    """Every pnn header ninja recorded for the build lies under expected_root, none under forbidden_roots,
    and pnn/pnn.hpp is among them (so the check saw the dependencies at all)."""
    deps = run(['ninja', '-C', build, '-t', 'deps'], build)
    headers = set()
    for line in deps.splitlines():
        path = line.strip()
        if path.endswith('.hpp') and '/pnn/' in path:
            headers.add(os.path.realpath(os.path.join(build, path)))
    expected_root = os.path.realpath(expected_root)
    umbrella = os.path.join(expected_root, 'pnn', 'pnn.hpp')
    if umbrella not in headers:
        raise Failure(f'the build in {build} did not read {umbrella}; the pnn headers it read: {sorted(headers)[:5]}')
    stray = [h for h in headers if not h.startswith(expected_root + os.sep)]
    stray += [h for h in headers for root in forbidden_roots if h.startswith(os.path.realpath(root) + os.sep)]
    if stray:
        raise Failure(f'the build in {build} read pnn headers outside {expected_root}: {sorted(set(stray))[:5]}')
    print(f'{build}: all {len(headers)} pnn headers read came from {expected_root}')


def main(argv):
    if len(argv) != 1:
        print('usage: check_packaging.py SOURCE_ROOT', file=sys.stderr)
        return 2
    source = os.path.realpath(argv[0])
    if shutil.which('cmake') is None:
        print('skipped: cmake is not installed (scripts/install-deps.sh installs it), so the CMake package '
              'cannot be tried')
        return 77
    for tool in ('meson', 'ninja', 'pkg-config', 'c++'):
        if shutil.which(tool) is None:
            print(f'FAIL: {tool} is not on PATH; pnn\'s own build needs it too')
            return 1

    with tempfile.TemporaryDirectory(prefix='pnn-packaging-') as scratch_link:
        scratch = os.path.realpath(scratch_link)
        prefix = os.path.join(scratch, 'prefix')
        installed_include = os.path.join(prefix, 'include')
        pkgconfig_dir = os.path.join(prefix, 'lib', 'pkgconfig')
        try:
            # 1. Install pnn as README.md says, from a build folder of its own.
            run(['meson', 'setup', os.path.join(scratch, 'pnn-build'), f'--prefix={prefix}'] + PNN_INSTALL_OPTIONS,
                source, environment())
            run(['meson', 'install', '-C', os.path.join(scratch, 'pnn-build'), '--quiet'], source, environment())
            for installed in ('include/pnn/pnn.hpp', 'lib/pkgconfig/pnn.pc', 'lib/cmake/pnn/pnnConfig.cmake',
                              'lib/cmake/pnn/pnnConfigVersion.cmake'):
                if not os.path.isfile(os.path.join(prefix, installed)):
                    raise Failure(f'meson install did not install {installed} under {prefix}')

            # 2. CMake: find_package(pnn CONFIG REQUIRED) from the prefix, and no other pnn.
            project = copy_consumer('cmake_consumer', os.path.join(scratch, 'cmake_consumer'))
            run(['cmake', '-S', '.', '-B', 'build', '-G', 'Ninja', f'-DCMAKE_PREFIX_PATH={prefix}'], project,
                environment())
            with open(os.path.join(project, 'build', 'CMakeCache.txt'), encoding='utf-8') as cache:
                pnn_dir = [line.split('=', 1)[1].strip() for line in cache if line.startswith('pnn_DIR:')]
            if pnn_dir != [os.path.join(prefix, 'lib', 'cmake', 'pnn')]:
                raise Failure(f'CMake took pnn from {pnn_dir}, not from {prefix}/lib/cmake/pnn')
            run(['cmake', '--build', 'build'], project, environment())
            check_headers_from(os.path.join(project, 'build'), installed_include, [source])
            run_consumer(os.path.join(project, 'build', 'consumer'), project)
            check_version_file(prefix, scratch)

            # 3. Meson with pnn's source tree as the subproject (pkg-config cannot see the prefix here;
            # --force-fallback-for makes sure an installed pnn elsewhere is not taken instead).
            project = copy_consumer('meson_consumer', os.path.join(scratch, 'meson_subproject'))
            os.mkdir(os.path.join(project, 'subprojects'))
            os.symlink(source, os.path.join(project, 'subprojects', 'pnn'))
            run(['meson', 'setup', 'build', '--force-fallback-for=pnn'], project, environment())
            run(['meson', 'compile', '-C', 'build'], project, environment())
            check_headers_from(os.path.join(project, 'build'), os.path.join(source, 'include'), [prefix])
            run_consumer(os.path.join(project, 'build', 'consumer'), project)

            # 4. The same Meson project without the subproject: dependency('pnn') through pkg-config.
            project = copy_consumer('meson_consumer', os.path.join(scratch, 'meson_pkgconfig'))
            run(['meson', 'setup', 'build'], project, environment(PKG_CONFIG_PATH=pkgconfig_dir))
            run(['meson', 'compile', '-C', 'build'], project, environment())
            check_headers_from(os.path.join(project, 'build'), installed_include, [source])
            run_consumer(os.path.join(project, 'build', 'consumer'), project)

            # 5. A plain compiler command; pkg-config's flags must name the prefix's include directory.
            project = os.path.join(scratch, 'pkgconfig_command')
            os.mkdir(project)
            shutil.copy(os.path.join(HERE, 'main.cpp'), project)
            env = environment(PKG_CONFIG_PATH=pkgconfig_dir)
            cflags = run(['pkg-config', '--cflags', 'pnn'], project, env).split()
            if f'-I{installed_include}' not in cflags:
                raise Failure(f'pkg-config --cflags pnn gives {cflags}, without -I{installed_include}')
            run('c++ -std=c++20 main.cpp $(pkg-config --cflags --libs pnn) -o consumer', project, env, shell=True)
            run_consumer(os.path.join(project, 'consumer'), project)
        except Failure as failure:
            print(f'FAIL: {failure}')
            return 1
    print('pnn installs, and CMake, Meson (subproject and pkg-config) and pkg-config projects build and run with it')
    return 0


def check_version_file(prefix, scratch):
    """pnnConfigVersion.cmake accepts pnn's own version and refuses the next major one."""
    version_file = os.path.join(prefix, 'lib', 'cmake', 'pnn', 'pnnConfigVersion.cmake')
    script = os.path.join(scratch, 'check_version.cmake')
    with open(script, 'w', encoding='utf-8') as f:
        f.write(f'''
include("{version_file}")
set(own "${{PACKAGE_VERSION}}")
string(REGEX MATCH "^([0-9]+)\\\\.([0-9]+)" _ "${{own}}")
math(EXPR next_major "${{CMAKE_MATCH_1}} + 1")
foreach(request "${{own}}" "${{next_major}}.0")
  string(REGEX MATCH "^([0-9]+)\\\\.([0-9]+)" _ "${{request}}")
  set(PACKAGE_FIND_VERSION "${{request}}")
  set(PACKAGE_FIND_VERSION_MAJOR "${{CMAKE_MATCH_1}}")
  set(PACKAGE_FIND_VERSION_MINOR "${{CMAKE_MATCH_2}}")
  include("{version_file}")
  message(STATUS "request ${{request}}: compatible=${{PACKAGE_VERSION_COMPATIBLE}} exact=${{PACKAGE_VERSION_EXACT}}")
endforeach()
''')
    output = run(['cmake', '-P', script], scratch)
    lines = [line for line in output.splitlines() if 'request ' in line]
    if len(lines) != 2 or 'compatible=TRUE exact=TRUE' not in lines[0] or 'compatible=FALSE' not in lines[1]:
        raise Failure(f'pnnConfigVersion.cmake must accept its own version and refuse the next major one:\n{output}')
    print('\n'.join(lines))


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
