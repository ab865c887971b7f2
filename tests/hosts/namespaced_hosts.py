"""Hosts on one machine: network namespaces joined by veth pairs on a bridge, for running pnn's MPI
programs across "hosts" with OpenMPI's TCP transport (used by the tests in this folder).

Layout, for a test with PID p and n hosts:
  pnn<p>sw        a namespace holding only the bridge br0 and one veth end per host (port0, port1, ...)
  pnn<p>h0 ...    one namespace per host: eth0 (the veth's other end) with 10.213.7.(10 + k)/24, and lo
Nothing is created in the machine's own namespace, so the subnet cannot clash with any address in use
there, and namespaces of tests running in parallel are told apart by the PID in their names.

mpirun runs inside host 0's namespace with a hostfile naming each host's address; it starts the other
hosts' daemons (orted) through a launch agent written for the run, which gets "HOST COMMAND..." as an
rsh would and runs the command (a shell command line) inside HOST's namespace with `ip netns exec`.
Each host also gets its own hostname (its namespace's name, in a UTS namespace of its own): OpenMPI
names its session directory in /tmp, which the hosts share, after the hostname, and daemons of one job
on hosts with the same name collide there (orted fails with "mkdir ... File exists", and mpirun waits
for it forever).

Hosts is a context manager: leaving it, however (an exception, SIGTERM from meson's timeout), kills
whatever still runs in the namespaces and deletes them; leftovers() reports such processes first.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

SKIP = 77  # meson's exit code for a skipped test
SUBNET = "10.213.7.0/24"
# OpenMPI's runtime (mpirun and each host's orted) notices a silent peer through TCP keepalives on its
# own connections, by default after 300 + 9 * 20 s; and once mpirun has sent a silent peer anything (the
# order to end the job, say) keepalives stop and only TCP's retransmission limit (about 15 minutes) ends
# the wait. So a job with a cut link ends promptly only if keepalives detect the cut before anything else
# happens: here after 2 idle seconds, then 3 probes 1 s apart, under the communicator's timeout (10 s).
KEEPALIVE = ["--mca", "oob_tcp_keepalive_time", "2", "--mca", "oob_tcp_keepalive_intvl", "1",
             "--mca", "oob_tcp_keepalive_probes", "3"]


def address(host):
    return f"10.213.7.{10 + host}"


def command_line(command):
    return " ".join(command)


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def why_skip():
    """Why a training across namespaced hosts cannot run here (no data, no namespaces), or None."""
    if not os.path.isdir("/usr/share/datasets/fashion-mnist") and not os.environ.get("PNN_DATA"):
        return "no Fashion-MNIST (install dataset-fashion-mnist or set PNN_DATA)"
    return unavailable()


def unavailable():
    """Why namespaced hosts cannot be made here, or None when they can (tried, not guessed)."""
    if os.geteuid() != 0:
        return "network namespaces need root (running as uid %d)" % os.geteuid()
    for tool in ("ip", "unshare", "mpirun"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"pnn{os.getpid()}probe"
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return "ip netns add failed: " + (result.stderr.strip() or f"exit code {result.returncode}")
    _ip("netns", "del", probe, check=False)
    return None


def _terminate_on_sigterm(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")  # so the `with` block cleans up


class Hosts:
    def __init__(self, count, tcp_retries2=None):
        """count hosts; tcp_retries2: if given, each host's TCP gives up on unacknowledged data after that
        many retransmissions (net.ipv4.tcp_retries2, a setting of each network namespace; Linux's
        default, 15, takes about 15 minutes)."""
        self.count = count
        self.tcp_retries2 = tcp_retries2
        self.prefix = f"pnn{os.getpid()}"
        self.switch = self.prefix + "sw"
        self.names = [f"{self.prefix}h{k}" for k in range(count)]
        self.directory = None
        self.made = []

    # --- setup and teardown ---

    def __enter__(self):
        signal.signal(signal.SIGTERM, _terminate_on_sigterm)
        signal.signal(signal.SIGINT, _terminate_on_sigterm)
        try:
            self._make()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _make(self):
        self.directory = tempfile.mkdtemp(prefix=self.prefix)
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for k, name in enumerate(self.names):
            self._add_namespace(name)
            # Both ends are created inside their namespaces, never in the machine's own.
            _ip("link", "add", self.port(k), "netns", self.switch, "type", "veth", "peer", "name", "eth0", "netns",
                name)
            _ip("-n", self.switch, "link", "set", self.port(k), "master", "br0", "up")
            _ip("-n", name, "addr", "add", address(k) + "/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "link", "set", "lo", "up")
            if self.tcp_retries2 is not None:
                _ip("netns", "exec", name, "sh", "-c", f"echo {self.tcp_retries2} > /proc/sys/net/ipv4/tcp_retries2")
        self.agent = os.path.join(self.directory, "enter-host")
        cases = "".join(f"  {address(k)}) namespace={name} ;;\n" for k, name in enumerate(self.names))
        with open(self.agent, "w") as f:
            f.write("#!/bin/sh\n"
                    "# mpirun's launch agent: HOST COMMAND... runs the shell command line in HOST's namespace.\n"
                    "host=$1; shift\n"
                    f'case "$host" in\n{cases}'
                    '  *) echo "enter-host: no namespaced host $host" >&2; exit 1 ;;\n'
                    "esac\n"
                    'exec ip netns exec "$namespace" unshare --uts sh -c \'hostname "$0" && exec sh -c "$1"\' '
                    '"$namespace" "$*"\n')
        os.chmod(self.agent, 0o755)

    def _add_namespace(self, name):
        _ip("netns", "add", name)
        self.made.append(name)

    def port(self, host):
        """The bridge's end of host's link (in the switch namespace)."""
        return f"port{host}"

    def leftovers(self):
        """Processes still running in the hosts' namespaces, as 'namespace: pid command' lines."""
        found = []
        for name in self.made:
            pids = _ip("netns", "pids", name, check=False).stdout.split()
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    continue  # ended meanwhile
                found.append(f"{name}: {pid} {command[:160]}")
        return found

    def kill_all(self):
        for name in self.made:
            for pid in _ip("netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def __exit__(self, *exception):
        self.kill_all()
        time.sleep(0.2)  # let the killed processes go before their namespaces do
        for name in reversed(self.made):
            _ip("netns", "del", name, check=False)
        self.made = []
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
        return False

    # --- running ---

    def mpirun(self, ranks, program, slots=1, keepalive=True):
        """The command running `program` (a list) as `ranks` ranks, `slots` per host, from host 0 (with
        OpenMPI's default keepalives if not `keepalive`)."""
        hostfile = os.path.join(self.directory, f"hostfile{slots}")
        with open(hostfile, "w") as f:
            f.writelines(f"{address(k)} slots={slots}\n" for k in range(self.count))
        return ["ip", "netns", "exec", self.names[0], "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
                self.names[0], "mpirun", "--allow-run-as-root", "--hostfile", hostfile,
                "-np", str(ranks), "--map-by", "node", "--bind-to", "none",
                "--mca", "plm_rsh_agent", self.agent, "--mca", "plm_rsh_no_tree_spawn", "1",
                "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", SUBNET,
                "--mca", "oob_tcp_if_include", SUBNET, *(KEEPALIVE if keepalive else []), *program]

    def check_spread(self, ranks, slots=1):
        """Fails unless mpirun places `ranks` ranks in every host's namespace (so a run really crosses hosts)."""
        command = self.mpirun(ranks, ["sh", "-c", "readlink /proc/self/ns/net"], slots=slots)
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        namespaces = set(result.stdout.split())
        if result.returncode != 0 or len(namespaces) != self.count:
            raise SystemExit(f"{ranks} ranks ran in {len(namespaces)} network namespaces, not the {self.count} hosts' "
                             f"(exit code {result.returncode}):\n{result.stdout}{result.stderr}")

    def cut(self, host):
        """Takes host's link down at the bridge: its packets go nowhere, as with a pulled cable."""
        _ip("-n", self.switch, "link", "set", self.port(host), "down")
