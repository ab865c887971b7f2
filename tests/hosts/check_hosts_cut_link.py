#!/usr/bin/env python3
"""A link cut in the middle of training across namespaced hosts ends the job, naming the lost rank, with
nothing left running (issue 18: pnn promises never to hang).

4 hosts, one rank each, train_mlp_data_parallel_mpi with --timeout 10. Once training is under way the link
of host 3 (rank 3) is taken down at the bridge, as with a pulled cable: no error reaches either side, the
packets just go nowhere. Then, within the timeout plus 15 s of the cut:
  - mpirun ends with a non-zero exit code,
  - no process is left in any host's namespace (orted and ranks included; leftovers are listed, killed,
    and fail the test),
  - the output names the lost peer: pnn's error names rank 3 as not answering, or OpenMPI's names host 3's
    address as the daemon it lost.
The times from the cut to mpirun's end and to the last process's end are printed. mpirun runs with the
keepalives namespaced_hosts.KEEPALIVE describes: without them OpenMPI's runtime waits for minutes on the
cut host whatever the ranks do.

usage: check_hosts_cut_link.py BUILD_EXAMPLES_DIR [--observe SECONDS] [--runtime-defaults]
  --observe waits that long after the cut before judging (to record how long a hang lasts);
  --runtime-defaults runs mpirun with OpenMPI's default keepalives (to record what happens then).
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


def main():
    examples = sys.argv[1]
    observe = float(sys.argv[sys.argv.index("--observe") + 1]) if "--observe" in sys.argv else TIMEOUT + GRACE
    keepalive = "--runtime-defaults" not in sys.argv
    if not os.path.isdir("/usr/share/datasets/fashion-mnist") and not os.environ.get("PNN_DATA"):
        print("skipped: no Fashion-MNIST (install dataset-fashion-mnist or set PNN_DATA)")
        return namespaced_hosts.SKIP
    reason = namespaced_hosts.unavailable()
    if reason:
        print("skipped:", reason)
        return namespaced_hosts.SKIP
    program = os.path.join(examples, "train_mlp_data_parallel_mpi")
    failures = []
    has_timeout = "--timeout" in subprocess.run([program, "--help"], capture_output=True, text=True).stdout
    if not has_timeout:
        failures.append(f"{program} has no --timeout flag; ran with the communicator's default timeout")
    arguments = ["--epochs", "100", "--seed", "7"] + (["--timeout", str(TIMEOUT)] if has_timeout else [])

    with namespaced_hosts.Hosts(HOSTS) as hosts, tempfile.TemporaryFile("w+") as log:
        hosts.check_spread(HOSTS)
        job = subprocess.Popen(hosts.mpirun(HOSTS, [program, *arguments], keepalive=keepalive), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)

        def output():
            log.seek(0)
            return log.read()

        # Training is under way once rank 0 reports its first samples/s; then let it run a little more.
        started = time.monotonic()
        while "samples/s" not in output():
            if job.poll() is not None or time.monotonic() - started > 60:
                sys.exit(f"FAIL: training did not start (exit code {job.poll()}):\n{output()}")
            time.sleep(0.1)
        time.sleep(2)
        if job.poll() is not None:
            sys.exit(f"FAIL: the job ended before the cut (exit code {job.returncode}):\n{output()}")
        hosts.cut(CUT)
        cut = time.monotonic()
        print(f"cut host {CUT}'s link {time.monotonic() - started:.1f} s after training started", flush=True)

        # Wait for mpirun, then for every process in every namespace, up to the deadline.
        deadline = cut + observe
        job_end = last_end = None
        left = hosts.leftovers()
        while time.monotonic() < deadline:
            if job_end is None and job.poll() is not None:
                job_end = time.monotonic() - cut
            left = hosts.leftovers()
            if not left:
                last_end = time.monotonic() - cut
                break
            time.sleep(0.2)
        if job_end is None and job.poll() is not None:
            job_end = time.monotonic() - cut
        text = output()
        print(text[-4000:].replace("\r", "\n").strip())
        print(f"after the cut: mpirun {'ended in %.1f s' % job_end if job_end is not None else 'still running'}"
              f" (exit code {job.returncode}), "
              + (f"every process had ended in {last_end:.1f} s" if last_end is not None else
                 f"{len(left)} processes still running {observe:.0f} s later"), flush=True)

    limit = TIMEOUT + GRACE
    if job_end is None or job_end > limit:
        failures.append(f"mpirun did not end within {limit} s of the cut")
    elif job.returncode == 0:
        failures.append("mpirun exited with code 0 although a host was cut off")
    if last_end is None or last_end > limit:
        failures.append(f"processes still running {observe:.0f} s after the cut (killed):\n  " + "\n  ".join(left))
    named_by_pnn = re.search(rf"\branks? (?:\d+, )*{CUT}\b[^\n;]*(?:did not|never|died|unreachable)", text)
    named_by_openmpi = re.search(rf"Remote daemon: [^\n]* on node {re.escape(namespaced_hosts.address(CUT))}\b", text)
    if not named_by_pnn and not named_by_openmpi:
        failures.append(f"the output names neither rank {CUT} nor host {CUT} ({namespaced_hosts.address(CUT)}), "
                        "the one cut off")
    if failures:
        sys.exit("FAIL: " + "\n".join(failures))
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
