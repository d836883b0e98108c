"""Who used the CPU while a command ran: CPU seconds per process group.

    .venv/bin/python benchmarks/cpu_share.py -- .venv/bin/python benchmarks/throughput.py --part bare ...

Runs the command, reads every process's user + system time from ``/proc``
every half second (the whole machine, so Ray's daemons and the vLLM engine's
processes count whatever started them), and prints CPU seconds and cores
(CPU seconds / wall seconds) per group: the vLLM engine's worker and core,
Ray Data's stage actors and tasks, Ray's own processes, the command itself.
Linux only. On a machine with nothing else running it shows where a run's
cores went; ``benchmarks/RESULTS.md`` uses it to explain the pipeline's
distance from bare vLLM on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
# First match wins: a process's command line -> its group.
GROUPS = (
    ("VLLM::Worker", "vLLM engine worker (the model)"),
    ("VLLM::EngineCore", "vLLM engine core (scheduler)"),
    ("vLLMEngineStageUDF", "Ray engine stage actor (vLLM front end)"),
    ("ray::MapWorker", "Ray Data stage actors"),
    ("ray::ReadPairs", "Ray Data tasks"),
    ("ray::Map", "Ray Data tasks"),
    ("ray::Write", "Ray Data tasks"),
    ("ray::IDLE", "Ray idle workers"),
    ("ray::", "Ray system actors (stats, autoscaler, dashboard agent, ...)"),
    ("raylet", "Ray daemons (raylet, GCS, dashboard, monitors)"),
    ("gcs_server", "Ray daemons (raylet, GCS, dashboard, monitors)"),
    ("ray/dashboard", "Ray daemons (raylet, GCS, dashboard, monitors)"),
    ("ray-dashboard", "Ray daemons (raylet, GCS, dashboard, monitors)"),
    ("ray/_private", "Ray daemons (raylet, GCS, dashboard, monitors)"),
    ("ray/autoscaler", "Ray daemons (raylet, GCS, dashboard, monitors)"),
)


def cpu_times() -> dict[int, tuple[float, str]]:
    """CPU seconds and command line of every process now."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        out[int(name)] = (
            (int(fields[11]) + int(fields[12])) / TICK,
            cmd or stat[stat.find("(") + 1 : stat.rfind(")")],
        )
    return out


def group_of(cmd: str, own_pid: int, pid: int) -> str:
    if pid == own_pid:
        return "the command (driver)"
    for needle, group in GROUPS:
        if needle in cmd:
            return group
    return "other processes"


def measure(command: list[str]) -> dict:
    first = cpu_times()
    last = dict(first)
    done = threading.Event()

    def sample():
        while not done.wait(0.5):
            last.update(cpu_times())  # a process that ended keeps its last reading

    thread = threading.Thread(target=sample, daemon=True)
    started = time.time()
    thread.start()
    child = subprocess.Popen(command)
    # Wait for the exit without reaping: the command's own final CPU time is
    # still in /proc until wait() below.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    done.set()
    thread.join()
    last.update(cpu_times())
    code = child.wait()
    wall = time.time() - started
    groups: dict[str, float] = {}
    for pid, (cpu, cmd) in last.items():
        used = cpu - first.get(pid, (0.0, cmd))[0]
        if used > 0:
            key = group_of(cmd, child.pid, pid)
            groups[key] = groups.get(key, 0.0) + used
    total = sum(groups.values())
    return {
        "command": command,
        "exit_code": code,
        "wall_s": round(wall, 1),
        "cpu_s": round(total, 1),
        "cores": round(total / wall, 2),
        "groups": {
            k: {"cpu_s": round(v, 1), "cores": round(v / wall, 3)}
            for k, v in sorted(groups.items(), key=lambda kv: -kv[1])
        },
    }


def main(args: argparse.Namespace) -> int:
    result = measure(args.command)
    lines = [f"wall {result['wall_s']} s, {result['cpu_s']} CPU s = {result['cores']} cores on average"]
    lines += [
        f"  {g['cpu_s']:8.1f} s  {g['cores']:5.2f} cores  {name}" for name, g in result["groups"].items()
    ]
    print("\n".join(lines), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result["exit_code"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    parsed = parser.parse_args()
    if parsed.command[:1] == ["--"]:
        parsed.command = parsed.command[1:]
    if not parsed.command:
        parser.error("give the command to run after --")
    sys.exit(main(parsed))
