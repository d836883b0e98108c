"""Product-facts job: extract selling points and normalized attributes for the
products whose content changed since the last run; reuse the rest.

    python jobs/extract_facts.py --products s3://shop-data/catalog/ --facts s3://shop-data/facts/

Exit status (factory/errors.py): 0 done (failures of single products are
counted, not fatal); 2 a setting or input error found before any engine time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional

from factory import errors
from factory.facts.job import FactsJobConfig, run
from factory.flags import FlagSet, parse_settings

# Every FactsJobConfig field is a flag; of the engine's, the two a facts run needs.
FLAGS = FlagSet(FactsJobConfig, inline={"engine": ("device", "batch_size")})


def build_parser() -> argparse.ArgumentParser:
    p = errors.JobParser(prog="extract_facts", description=__doc__.split("\n\n")[0])
    FLAGS.add_to(p)
    return p


def execute(argv: Optional[Sequence[str]]) -> int:
    config: FactsJobConfig = parse_settings(FLAGS, build_parser(), argv)
    print(run(config))
    return errors.EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    return errors.job_main("extract_facts", lambda _log_file: execute(argv))


if __name__ == "__main__":  # vLLM spawns an engine process: this guard is required
    sys.exit(main())
