"""S3 going down for good at every point of a run: does the job always say so?

    .venv/bin/python -m tests.outage_sweep                 # every 3rd request, 0..120
    .venv/bin/python -m tests.outage_sweep --after 33 51    # just these points

A development tool, not a test (a run is 15 s to 3 min; the sweep takes
10-30 minutes). Each point is one run of the nightly job with the instant
stand-in engine (``tests.stand_in_job``), inputs and output on moto's S3
behind ``FaultyS3Proxy``: the proxy forwards the first N requests, then
answers every request 503 SlowDown. The job must exit 1 with one line
``error: storage failed on s3://<the bucket>/...`` that names the object.
One line per point; the console of a point that fails is kept beside
``--keep`` for reading. This is what found the failure CI met on
2026-12-05 (a store failing under a Ray Data stage ended the job in a bare
traceback) and the five other ways of saying it badly fixed with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY, make_stand_in_model, run_stand_in_job
from tests.owed import CHANNELS, owed_pairs, s3_job_args, upload_inputs
from tests.s3_faults import FaultyS3Proxy

BUCKET = "outage-sweep"


class OutageAfter(FaultyS3Proxy):
    """Forwards ``after`` requests, then answers every one 503."""

    def __init__(self, upstream: str, after: int):
        super().__init__(upstream)
        self.after = after

    def _fate(self, method: str = "", path: str = "") -> str:
        with self._lock:
            if self.counts["forwarded"] >= self.after:
                self.outage = True
        return super()._fate(method, path)


def one_point(endpoint: str, after: int, model: Path, keep: Path) -> bool:
    with OutageAfter(endpoint, after) as proxy:
        args = [
            *s3_job_args(BUCKET, proxy.url, f"s3://{BUCKET}/out-{after}"),
            f"--channels={','.join(CHANNELS)}",
            "--batch-size=4",
            "--rows-per-file=3",
            "--no-repair",
            "--s3-max-attempts=2",
            f"--model={model}",
        ]
        started = time.time()
        proc = run_stand_in_job(args, keep / "logs", timeout=1200)
        # The run made fewer requests than N: S3 never went down, and it must simply have published.
        never_down = proc.returncode == 0 and not proxy.outage
    console = proc.stdout + proc.stderr
    said = [line for line in console.splitlines() if line.startswith("error: ")]
    ok = never_down or (
        proc.returncode == 1
        and len(said) == 1
        and said[0].startswith(f"error: storage failed on s3://{BUCKET}/")
    )
    shown = "(finished before the outage)" if never_down else said[0][:200] if said else "(no error line)"
    print(
        f"after {after:>3} requests: exit {proc.returncode}, {time.time() - started:.0f} s, "
        f"{'ok' if ok else 'NOT OK'}: {shown}",
        flush=True,
    )
    if not ok:
        (keep / f"console-after-{after}.txt").write_text(console)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--after", type=int, nargs="*", default=list(range(0, 121, 3)), help="Requests before the outage."
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="Where failing consoles and logs go (a temp folder)."
    )
    args = parser.parse_args(argv)
    from moto.server import ThreadedMotoServer

    from factory import sample_data

    keep = args.keep or Path(tempfile.mkdtemp(prefix="outage-sweep-"))
    keep.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        AWS_ACCESS_KEY_ID=S3_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET_KEY, AWS_DEFAULT_REGION="us-east-1"
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        import boto3

        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        sample = keep / "sample"
        sample.mkdir(exist_ok=True)
        sample_data.generate(sample)
        pairs, _ = owed_pairs(sample, 6)
        upload_inputs(s3, BUCKET, "in", pairs, sample)
        model = make_stand_in_model(keep / "stand-in-model")
        results = [one_point(endpoint, after, model, keep) for after in args.after]
    finally:
        server.stop()
    print(f"{sum(results)} of {len(results)} points ok; consoles of the others in {keep}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
