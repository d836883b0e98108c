"""What the users table costs the driver: read and checked as the run does
(``inputs.read_lookup_table``), then put in the object store (``ray.put``),
with the driver's peak RSS (VmHWM) after each step.

    .venv/bin/python benchmarks/driver_users.py /tmp/cpucache/pairs-1000000-seed-11/users.parquet
    .venv/bin/python benchmarks/driver_users.py /tmp/cpucache/pairs-10000000-seed-11/users.parquet

(the users files ``benchmarks/cpu_side.py`` generates: N/10 users for N pairs). RESULTS section 14.
"""

from __future__ import annotations

import argparse
import json


def vm(name: str) -> int:
    """A /proc/self/status figure in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) // 1024
    raise KeyError(name)


def main(args: argparse.Namespace) -> None:
    import ray

    from factory import columns as C
    from factory import inputs
    from factory.storage import resolve

    out = {"users_file": args.users, "start_mib": vm("VmHWM")}
    users, _ = inputs.read_lookup_table(resolve(args.users), inputs.USERS, C.USER_ID)
    out.update(
        users=users.num_rows,
        arrow_mib=users.nbytes // 2**20,
        after_read_peak_mib=vm("VmHWM"),
        after_read_rss_mib=vm("VmRSS"),
    )
    ray.init(num_cpus=1, include_dashboard=False)
    ray.put(users)
    out.update(after_put_peak_mib=vm("VmHWM"), after_put_rss_mib=vm("VmRSS"))
    ray.shutdown()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("users", help="A users Parquet file or folder.")
    main(parser.parse_args())
