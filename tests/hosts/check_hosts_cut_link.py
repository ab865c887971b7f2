#!/usr/bin/env python3
"""A link cut in the middle of training across namespaced hosts ends the job, naming the lost peer, with
nothing left running (issue 18: pnn promises never to hang).

4 hosts, one rank each, train_mlp_data_parallel_mpi with --timeout 10. Once training is under way the link
of host 3 (rank 3) is taken down at the bridge, as with a pulled cable: no error reaches either side, the
packets just go nowhere. Then, within the timeout plus 15 s of the cut:
  - mpirun ends with a non-zero exit code,
  - no process is left in any host's namespace (orted and ranks included; leftovers are listed, killed,
    and fail the test),
  - the output names the lost peer.
The times from the cut to the ranks' end, mpirun's end and the last process's end are printed.

Whatever the ranks do, mpirun and the cut host's orted end only when OpenMPI's runtime notices the lost
connection between them (see namespaced_hosts.KEEPALIVE): with OpenMPI's defaults they were still
running minutes after the cut. Two configurations that notice it, one case each:
  keepalive       mpirun with TCP keepalives (namespaced_hosts.KEEPALIVE) that notice the cut in about
                  5 s, before pnn's timeout: OpenMPI ends the job naming host 3's address (or, if pnn's
                  timeout comes first, pnn names rank 3).
  retransmission  OpenMPI's default keepalives, and the hosts' TCP giving up on unacknowledged data after
                  3 retransmissions (net.ipv4.tcp_retries2 = 3, about 3 s, in each host's namespace):
                  pnn's timeout fires first and must name rank 3 as the one that did not answer; OpenMPI's
                  order to end the job cannot reach host 3, and TCP's limit ends that wait.

usage: check_hosts_cut_link.py BUILD_EXAMPLES_DIR [--observe SECONDS] [--runtime-defaults]
  --observe waits that long after each cut before judging (to record how long a hang lasts);
  --runtime-defaults runs one case with OpenMPI's and Linux's defaults instead (to record what happens).
"""
import os
import re
import subprocess
import sys
import tempfile
import time

import namespaced_hosts

TIMEOUT = 10  # the communicator's timeout, seconds (--timeout)
GRACE = 15  # what the job may take beyond it to end everywhere
HOSTS = 4
CUT = 3  # the host (and rank: one per host, in order) whose link is cut


def names_rank(text):
    """pnn's error names rank CUT among those that did not answer."""
    return re.search(rf"\branks? (?:\d+, )*{CUT}\b[^\n;]*(?:did not|never|died|unreachable)", text)


def names_host(text):
    """OpenMPI's error names host CUT's address as the daemon it lost."""
    return re.search(rf"Remote daemon: [^\n]* on node {re.escape(namespaced_hosts.address(CUT))}\b", text)


def cut_case(name, program, arguments, observe, keepalive, tcp_retries2, named):
    """Runs the job, cuts the link, and returns the failures seen."""
    failures = []
    with namespaced_hosts.Hosts(HOSTS, tcp_retries2=tcp_retries2) as hosts, tempfile.TemporaryFile("w+") as log:
        hosts.check_spread(HOSTS)
        job = subprocess.Popen(hosts.mpirun(HOSTS, [program, *arguments], keepalive=keepalive), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)

        def output():
            log.seek(0)
            return log.read()

        # Training is under way once rank 0 reports its first samples/s; then let it run a little more.
        started = time.monotonic()
        while "samples/s" not in output():
            if job.poll() is not None or time.monotonic() - started > 60:
                return [f"{name}: training did not start (exit code {job.poll()}):\n{output()}"]
            time.sleep(0.1)
        time.sleep(2)
        if job.poll() is not None:
            return [f"{name}: the job ended before the cut (exit code {job.returncode}):\n{output()}"]
        hosts.cut(CUT)
        cut = time.monotonic()
        print(f"{name}: cut host {CUT}'s link {cut - started:.1f} s after training started", flush=True)

        # Wait for the ranks, mpirun, and every process in every namespace, up to the deadline.
        deadline = cut + observe
        job_end = ranks_end = last_end = None
        left = hosts.leftovers()
        while time.monotonic() < deadline:
            if job_end is None and job.poll() is not None:
                job_end = time.monotonic() - cut
            left = hosts.leftovers()
            if ranks_end is None and not any(os.path.basename(program) in line for line in left):
                ranks_end = time.monotonic() - cut
            if not left:
                last_end = time.monotonic() - cut
                break
            time.sleep(0.2)
        if job_end is None and job.poll() is not None:
            job_end = time.monotonic() - cut
        text = output()
        print("\n".join(line for line in text.replace("\r", "\n").splitlines()[-40:]
                        if line.strip() and "samples/s" not in line))

        def seconds(value):
            return f"{value:.1f} s" if value is not None else f"not within {observe:.0f} s"

        print(f"{name}: after the cut, the ranks ended: {seconds(ranks_end)}; mpirun ended: {seconds(job_end)} "
              f"(exit code {job.returncode}); every process ended: {seconds(last_end)}", flush=True)

    limit = TIMEOUT + GRACE
    if job_end is None or job_end > limit:
        failures.append(f"{name}: mpirun did not end within {limit} s of the cut")
    elif job.returncode == 0:
        failures.append(f"{name}: mpirun exited with code 0 although a host was cut off")
    if last_end is None or last_end > limit:
        failures.append(f"{name}: processes still running {observe:.0f} s after the cut (killed):\n  " +
                        "\n  ".join(left))
    if not any(check(text) for check in named):
        failures.append(f"{name}: the output does not name the lost peer (rank {CUT}" +
                        (f" or host {namespaced_hosts.address(CUT)})" if names_host in named else ")"))
    return failures


def main():
    examples = sys.argv[1]
    observe = float(sys.argv[sys.argv.index("--observe") + 1]) if "--observe" in sys.argv else TIMEOUT + GRACE
    reason = namespaced_hosts.why_skip()
    if reason:
        print("skipped:", reason)
        return namespaced_hosts.SKIP
    program = os.path.join(examples, "train_mlp_data_parallel_mpi")
    failures = []
    has_timeout = "--timeout" in subprocess.run([program, "--help"], capture_output=True, text=True).stdout
    if not has_timeout:
        failures.append(f"{program} has no --timeout flag; ran with the communicator's default timeout")
    arguments = ["--epochs", "100", "--seed", "7"] + (["--timeout", str(TIMEOUT)] if has_timeout else [])

    if "--runtime-defaults" in sys.argv:
        cases = [("defaults", False, None, [names_rank, names_host])]
    else:
        cases = [("keepalive", True, None, [names_rank, names_host]), ("retransmission", False, 3, [names_rank])]
    for name, keepalive, tcp_retries2, named in cases:
        failures += cut_case(name, program, arguments, observe, keepalive, tcp_retries2, named)
    if failures:
        sys.exit("FAIL: " + "\n".join(failures))
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
