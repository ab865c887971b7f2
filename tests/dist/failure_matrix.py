#!/usr/bin/env python3
"""One case of the MPI failure matrix: a rank of a data-parallel training under mpirun fails; every process
must exit within the communicator's timeout plus SLACK seconds, non-zero, with a message naming the rank,
and no process of the program may be left.

usage: failure_matrix.py CASE TIMEOUT_SECONDS -- MPIRUN... PROGRAM

CASE is one of
  kill    the driver sends SIGKILL to rank 2 once training runs (OpenMPI notices and names it)
  stop    the driver sends SIGSTOP to rank 2 (it stops answering: pnn's timeout names it)
  stop-pipeline   the same in a 4-stage pipeline, whose ranks wait in messages and broadcasts
  sleep   rank 2 sleeps before a collective (stuck outside pnn; the others wait in MPI_Iallreduce)
  throw   rank 2's loss throws at a step
  late    rank 2 sleeps before it makes its model: the others cannot even set up their communicators
The driver appends the program's mode and TIMEOUT_SECONDS (see mpi_failure.cpp) to the command. It prints
the case, the time from the fault to the job's end and the messages: the lines of the failure matrix.
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time

SLACK = 8.0  # seconds past the timeout for the survey's grace period, MPI_Abort and mpirun's teardown
FAULTY = 2

case, timeout = sys.argv[1], float(sys.argv[2])
command = sys.argv[sys.argv.index("--") + 1:]
program = os.path.realpath(command[-1])
mode = {"kill": "train", "stop": "train", "stop-pipeline": "pipeline", "sleep": "sleep", "throw": "throw",
        "late": "late"}[case]
signals = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "stop-pipeline": signal.SIGSTOP}
limit = timeout + SLACK

# What the output must show: OpenMPI's word on the killed rank, pnn's on the throwing one, and for a rank
# that stops answering the timeout reports parsed by check_reports.
expected = {
    "kill": r"process rank 2 with PID \d+ on node \S+ exited on signal 9 \(Killed\)",
    "throw": r"pnn: rank 2 failed in train_step: .*label 7",
    "late": r"pnn: rank [013]: setting up a communicator over the job's 4 ranks did not complete within "
            + str(int(timeout * 1000)) + r" ms: a rank did not get there",
}.get(case)
report = re.compile(r"^pnn: rank (\d) failed in [^:]+: rank \1: (.+?) did not complete within "
                    + str(int(timeout * 1000)) + r" ms( \(collective #\d+\))?(, paused there[^;]*)?((; .*)*)$")

lines = []  # (time read, line)
seen = threading.Condition()


def read(stream):
    for line in stream:
        with seen:
            lines.append((time.monotonic(), line.rstrip("\n")))
            seen.notify_all()


def wait_for(pattern, deadline):
    """The first line matching `pattern` and when it was read, or None at the deadline."""
    with seen:
        while True:
            for when, line in lines:
                match = re.search(pattern, line)
                if match:
                    return when, match
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            seen.wait(left)


def survivors():
    """Processes of the program still alive (zombies are dead: their parent only has to reap them)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.path.realpath(f"/proc/{entry}/exe") != program:
                continue
            with open(f"/proc/{entry}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        found.append(int(entry))
    return found


def fail(message):
    print(f"FAIL ({case}): {message}")
    sys.exit(1)


if survivors():
    fail(f"processes of {program} run before the test starts: {survivors()}")
job = subprocess.Popen(command + [mode, f"{timeout:g}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, start_new_session=True)
reader = threading.Thread(target=read, args=(job.stdout,), daemon=True)
reader.start()
failures = []
start = time.monotonic()
fault = None
found = wait_for(rf"^rank {FAULTY} pid (\d+)$", start + 60)
if found is None:
    failures.append("rank 2 never printed its process id")
else:
    pid = int(found[1].group(1))
    # The fault: at step 100, made by the program (sleep, throw) or by this driver (kill, stop).
    marker = {"sleep": rf"^rank {FAULTY} sleeps at step 100$",
              "late": rf"^rank {FAULTY} sleeps before joining$"}.get(case, r"^step 100$")
    found = wait_for(marker, start + 60)
    if found is None:
        failures.append("training never reached step 100")
    else:
        fault = found[0]
        if case in signals:
            os.kill(pid, signals[case])
            fault = time.monotonic()
        try:
            job.wait(timeout=max(0.0, fault + limit - time.monotonic()))
        except subprocess.TimeoutExpired:
            failures.append(f"still running {limit:g} s after the fault (a hang)")
        elapsed = time.monotonic() - fault
if job.poll() is None:
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
reader.join(timeout=5)
output = "\n".join(line for _, line in lines)
# Every process of the job must be gone within the limit too (zombies count as gone: mpirun or init reaps
# them).
deadline = max(time.monotonic(), fault + limit) if fault is not None else time.monotonic() + 3
while survivors() and time.monotonic() < deadline:
    time.sleep(0.1)
left = survivors()
for survivor in left:
    try:
        os.kill(survivor, signal.SIGCONT)
        os.kill(survivor, signal.SIGKILL)
    except ProcessLookupError:
        pass

print("\n".join(line for line in output.splitlines() if not line.startswith("step ")))
if left:
    failures.append(f"processes of the program were left running (now killed): {left}")
if job.returncode == 0:
    failures.append("the job succeeded but a rank failed")


def check_reports():
    """Every timeout report (several ranks may print one, each until mpirun ends it) names rank 2: silent,
    or, when mpirun's SIGCONT let the stopped rank answer late, paused in its wait; it names every other
    rank as waiting (not always in the reporter's operation: rank 2 may stop between its messages to two
    partners); and at least one report says rank 2 did not answer. Rank 2 itself, continued, may report
    too, saying it was paused."""
    silent_reports = 0
    for line in output.splitlines():
        if not line.startswith("pnn: "):
            continue
        match = report.match(line)
        if not match:
            failures.append(f"not a timeout report: {line}")
            continue
        reporter = int(match.group(1))
        if reporter == FAULTY:
            if not match.group(4):
                failures.append(f"rank 2 reports without saying it was paused: {line}")
            continue
        said = {}
        for clause in match.group(5).split("; ")[1:]:
            who = re.match(r"ranks? ([\d, ]+) (did not answer|was waiting in|were waiting in) (.*)", clause)
            if not who:
                failures.append(f"a clause says neither who answered nor who did not: {clause!r} in {line}")
                continue
            for rank in who.group(1).split(", "):
                said[int(rank)] = (who.group(2), who.group(3))
        healthy = [rank for rank in range(4) if rank not in (reporter, FAULTY)]
        faulty = said.get(FAULTY, ("", ""))
        if faulty[0] == "did not answer":
            silent_reports += 1
        elif ", paused there" not in faulty[1]:
            failures.append(f"the report does not name rank 2 as silent or stopped: {line}")
        for rank in healthy:
            state = said.get(rank, ("", ""))
            if "waiting" not in state[0] or ", paused there" in state[1]:
                failures.append(f"the report does not say rank {rank} was waiting: {line}")
    if silent_reports == 0:
        failures.append("no report says rank 2 did not answer")


if expected and not re.search(expected, output):
    failures.append(f"no line matches {expected!r}")
if case in ("stop", "stop-pipeline", "sleep"):
    check_reports()
if "MPI_ERR" in output:
    failures.append("MPI reported an error of its own (MPI_ERR...): pnn misused it")
if failures:
    fail("; ".join(failures))
pnn_lines = [line for line in output.splitlines() if line.startswith("pnn: ") or "exited on signal" in line]
print(f"ok ({case}): exit code {job.returncode}, {elapsed:.1f} s after the fault (limit {limit:g} s)")
print(f"matrix | {case} | {elapsed:.1f} s | {pnn_lines[0] if pnn_lines else ''}")
