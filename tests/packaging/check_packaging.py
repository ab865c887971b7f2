#!/usr/bin/env python3
"""Installs pnn into a temporary prefix and builds the projects of README.md's "Use pnn in your project"
against it, with the commands the README gives, then runs each program (tests/packaging/main.cpp):

    check_packaging.py SOURCE_ROOT

  1. pnn itself: meson setup with --prefix=TMP/pnn (its own programs off), meson install.
  2. CMake: cmake_consumer/ with find_package(pnn CONFIG REQUIRED), -DCMAKE_PREFIX_PATH=TMP/pnn.
  3. Meson, pnn as a subproject: meson_consumer/ with subprojects/pnn a link to SOURCE_ROOT.
  4. Meson, the installed pnn through pkg-config: meson_consumer/ without subprojects/.
  5. A plain compiler command with $(pkg-config --cflags --libs pnn).

The commands are README.md's, with $HOME/pnn made TMP/pnn, and the README must show the consumers' build
files too. Each consumer is copied out of the source tree, and each build is checked to have read pnn's
headers from where it should (the prefix; the subproject for 3), so a build that silently used the source
tree, or another installed pnn, fails. Exits 77 (skipped) when cmake is missing, naming it; 1 on any failure.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# The commands of README.md's "Use pnn in your project", as it shows them; "$HOME/pnn" is the prefix.
PNN_INSTALL_COMMANDS = [
    'meson setup build-install --prefix="$HOME/pnn" --libdir=lib -Dtests=false -Dexamples=false -Dbench=disabled '
    '-Dcuda=disabled -Dmpi=disabled',
    'meson install -C build-install']
CMAKE_COMMANDS = ['cmake -S . -B build -G Ninja -DCMAKE_PREFIX_PATH="$HOME/pnn"', 'cmake --build build']
MESON_SUBPROJECT_COMMANDS = ['meson setup build --force-fallback-for=pnn', 'meson compile -C build']
MESON_PKGCONFIG_COMMANDS = ['PKG_CONFIG_PATH="$HOME/pnn/lib/pkgconfig" meson setup build', 'meson compile -C build']
PKGCONFIG_COMMANDS = ['export PKG_CONFIG_PATH="$HOME/pnn/lib/pkgconfig"',
                      'c++ -std=c++20 main.cpp $(pkg-config --cflags --libs pnn) -o my_program']


class Failure(Exception):
    pass


class Readme:
    """README.md's lines, so that the test runs the commands and files the README shows, and fails when
    the two part."""

    def __init__(self, path, prefix):
        with open(path, encoding='utf-8') as f:
            # A command may end in a comment after two or more spaces.
            self.lines = {line.split('  #')[0].strip() for line in f}
        self.path = path
        self.prefix = prefix

    def commands(self, commands):
        """The commands, each checked to be a line of the README, with "$HOME/pnn" made the prefix."""
        for command in commands:
            if command not in self.lines:
                raise Failure(f'{self.path} does not show the command `{command}` (the README and this test must '
                              'agree: change both)')
        return [command.replace('$HOME/pnn', self.prefix) for command in commands]

    def check_shows_file(self, path):
        """Every line of the file but its comments is a line of the README."""
        with open(path, encoding='utf-8') as f:
            missing = [line.strip() for line in f if line.strip() and not line.lstrip().startswith('#')
                       and line.strip() not in self.lines]
        if missing:
            raise Failure(f'{self.path} does not show these lines of {path}: {missing}')


def run(command, cwd, env=None):
    """Runs a shell command line, echoing it; raises Failure with its output when it fails."""
    shown = command if isinstance(command, str) else ' '.join(command)
    print(f'$ (cd {cwd} && {shown})', flush=True)
    result = subprocess.run(command, cwd=cwd, env=env, shell=isinstance(command, str), capture_output=True,
                            text=True)
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
        prefix = os.path.join(scratch, 'pnn')
        installed_include = os.path.join(prefix, 'include')
        try:
            readme = Readme(os.path.join(source, 'README.md'), prefix)
            readme.check_shows_file(os.path.join(HERE, 'cmake_consumer', 'CMakeLists.txt'))
            readme.check_shows_file(os.path.join(HERE, 'meson_consumer', 'meson.build'))

            # 1. Install pnn as README.md says, from a build folder of its own (not build-install in the tree).
            pnn_build = os.path.join(scratch, 'pnn-build')
            for command in readme.commands(PNN_INSTALL_COMMANDS):
                run(command.replace('build-install', pnn_build), source, environment())
            for installed in ('include/pnn/pnn.hpp', 'lib/pkgconfig/pnn.pc', 'lib/cmake/pnn/pnnConfig.cmake',
                              'lib/cmake/pnn/pnnConfigVersion.cmake'):
                if not os.path.isfile(os.path.join(prefix, installed)):
                    raise Failure(f'meson install did not install {installed} under {prefix}')

            # 2. CMake: find_package(pnn CONFIG REQUIRED) from the prefix, and no other pnn.
            project = copy_consumer('cmake_consumer', os.path.join(scratch, 'cmake_consumer'))
            for command in readme.commands(CMAKE_COMMANDS):
                run(command, project, environment())
            with open(os.path.join(project, 'build', 'CMakeCache.txt'), encoding='utf-8') as cache:
                pnn_dir = [line.split('=', 1)[1].strip() for line in cache if line.startswith('pnn_DIR:')]
            if pnn_dir != [os.path.join(prefix, 'lib', 'cmake', 'pnn')]:
                raise Failure(f'CMake took pnn from {pnn_dir}, not from {prefix}/lib/cmake/pnn')
            check_headers_from(os.path.join(project, 'build'), installed_include, [source])
            run_consumer(os.path.join(project, 'build', 'my_program'), project)
            check_version_file(prefix, scratch)

            # 3. Meson with pnn's source tree as the subproject (pkg-config cannot see the prefix here, and
            # --force-fallback-for makes sure that no installed pnn elsewhere is taken instead).
            project = copy_consumer('meson_consumer', os.path.join(scratch, 'meson_subproject'))
            os.mkdir(os.path.join(project, 'subprojects'))
            os.symlink(source, os.path.join(project, 'subprojects', 'pnn'))
            for command in readme.commands(MESON_SUBPROJECT_COMMANDS):
                run(command, project, environment())
            check_headers_from(os.path.join(project, 'build'), os.path.join(source, 'include'), [prefix])
            run_consumer(os.path.join(project, 'build', 'my_program'), project)

            # 4. The same Meson project without the subproject: dependency('pnn') through pkg-config.
            project = copy_consumer('meson_consumer', os.path.join(scratch, 'meson_pkgconfig'))
            for command in readme.commands(MESON_PKGCONFIG_COMMANDS):
                run(command, project, environment())
            check_headers_from(os.path.join(project, 'build'), installed_include, [source])
            run_consumer(os.path.join(project, 'build', 'my_program'), project)

            # 5. A plain compiler command; pkg-config's flags must name the prefix's include directory.
            project = os.path.join(scratch, 'pkgconfig_command')
            os.mkdir(project)
            shutil.copy(os.path.join(HERE, 'main.cpp'), project)
            export, compile_command = readme.commands(PKGCONFIG_COMMANDS)
            cflags = run(f'{export} && pkg-config --cflags pnn', project, environment()).split()
            if f'-I{installed_include}' not in cflags:
                raise Failure(f'pkg-config --cflags pnn gives {cflags}, without -I{installed_include}')
            run(f'{export} && {compile_command}', project, environment())
            run_consumer(os.path.join(project, 'my_program'), project)
        except Failure as failure:
            print(f'FAIL: {failure}')
            return 1
    print('pnn installs, and CMake, Meson (subproject and pkg-config) and pkg-config projects build and run with it')
    return 0


def check_version_file(prefix, scratch):
    """pnnConfigVersion.cmake accepts requests for its own version and major.minor, and an older minor only
    from 1.0 on; it refuses the next minor and the next major version."""
    version_file = os.path.join(prefix, 'lib', 'cmake', 'pnn', 'pnnConfigVersion.cmake')
    with open(version_file, encoding='utf-8') as f:
        own = re.search(r'set\(PACKAGE_VERSION "([0-9]+)\.([0-9]+)\.([0-9]+)"\)', f.read())
    if not own:
        raise Failure(f'{version_file} does not set PACKAGE_VERSION to a version MAJOR.MINOR.PATCH')
    major, minor, patch = map(int, own.groups())
    expected = {f'{major}.{minor}.{patch}': 'TRUE', f'{major}.{minor}': 'TRUE', f'{major}.{minor + 1}': 'FALSE',
                f'{major + 1}.0': 'FALSE'}
    if minor > 0:
        expected[f'{major}.{minor - 1}'] = 'TRUE' if major > 0 else 'FALSE'
    script = os.path.join(scratch, 'check_version.cmake')
    with open(script, 'w', encoding='utf-8') as f:
        for request in expected:
            parts = request.split('.')
            f.write(f'set(PACKAGE_FIND_VERSION "{request}")\n'
                    f'set(PACKAGE_FIND_VERSION_MAJOR "{parts[0]}")\n'
                    f'set(PACKAGE_FIND_VERSION_MINOR "{parts[1]}")\n'
                    f'include("{version_file}")\n'
                    f'message(STATUS "request {request}: compatible=${{PACKAGE_VERSION_COMPATIBLE}}")\n')
    output = run(['cmake', '-P', script], scratch)
    for request, compatible in expected.items():
        if f'request {request}: compatible={compatible}' not in output:
            raise Failure(f'pnnConfigVersion.cmake ({major}.{minor}.{patch}) must answer compatible={compatible} '
                          f'to a request for {request}:\n{output}')
    print(output.strip())


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
