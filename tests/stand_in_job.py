"""The nightly job with the instant stand-in engine, as its own process.

    python -m tests.stand_in_job [nightly flags]

``STAND_IN_ENGINE_FAILS=<message>`` makes the engine raise that message in its
Ray worker, as a broken engine would.
"""

from __future__ import annotations

import os
import sys

import pyarrow as pa

from benchmarks.cpu_side import EchoEngine, echo_generate_stage


class FailingEngine(EchoEngine):
    def __call__(self, batch: pa.Table) -> pa.Table:
        raise RuntimeError(os.environ["STAND_IN_ENGINE_FAILS"])


if __name__ == "__main__":
    import benchmarks.cpu_side
    import jobs.nightly_copy as job
    from factory.pipeline import passes

    if os.environ.get("STAND_IN_ENGINE_FAILS"):
        benchmarks.cpu_side.EchoEngine = FailingEngine  # what echo_generate_stage builds its actors from
    passes.build_generate_stage = echo_generate_stage(reject_share=0.2)
    sys.exit(job.main(sys.argv[1:]))
