"""Nightly copy job: pairs + profiles + catalog in, personalized copy out.

    python jobs/nightly_copy.py                      # demo: sample data, bundled model, ./out
    ray job submit --working-dir . -- python jobs/nightly_copy.py --pairs s3://... --output s3://...

See README.md for the input contract, the output layout and every flag.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from pydantic import ValidationError

from factory.cli import parse_config
from factory.inputs import InputError
from factory.pipeline import ConfigError, IncompleteRun, RunResult, run
from factory.publish import PublishConflict
from factory.prompts import TemplateError


def report(result: RunResult) -> str:
    if result.action == "published":
        return (f"\nRun {result.run_id} is already published (attempt {result.attempt}, {result.rows_written} rows): "
                f"{result.manifest_uri}\nNothing to do. Pass --force to run it again as a new attempt.")
    resumed = (f"  resumed:      {result.rows_resumed} row(s) were already written; "
               f"{result.rows_generated} generated now" if result.rows_resumed else None)
    lines = [
        "",
        f"Run {result.run_id} (attempt {result.attempt}) published in {result.seconds:.0f} s",
        f"  manifest:     {result.manifest_uri}",
        f"  output:       {result.output_uri}  ({len(result.files)} copy file(s))",
        f"  rows written: {result.rows_written}  "
        + "  ".join(f"{ch}={n}" for ch, n in sorted(result.rows_by_channel.items())),
        f"  dead letters: {result.dead_letters}  "
        + "  ".join(f"{r}={n}" for r, n in sorted(result.dead_letters_by_reason.items())),
    ]
    if resumed:
        lines.append(resumed)
    q = result.quality
    if q.get("rows"):
        lines.append("  quality:      " + "  ".join(f"{s}={n}" for s, n in q["status"].items())
                     + "   (before repair: " + "  ".join(f"{s}={n}" for s, n in q["before_repair"]["status"].items())
                     + ")")
        for channel, counts in q["status_by_channel"].items():
            lines.append(f"    {channel:<14}" + "  ".join(f"{s}={n}" for s, n in counts.items()))
        top = list(q["reasons"].items())[:5]
        if top:
            lines.append("  top reasons:  " + "  ".join(f"{r}={n}" for r, n in top))
        if q["review_queue"]["file"]:
            lines.append(f"  review queue: {result.output_uri}/{q['review_queue']['file']}  "
                         f"({q['review_queue']['rows']} rows)")
    lines.append("  sample copies (accepted):")
    for s in result.samples[:3]:
        lines.append(f"    [{s['channel']}, {s['locale']}, {s['user_id']} x {s['product_id']}] {s['text']}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = parse_config(argv)
        result = run(config)
    except ValidationError as exc:
        print(f"error: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except (ConfigError, InputError, TemplateError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PublishConflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except IncompleteRun as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    print(report(result))
    return 0


if __name__ == "__main__":  # vLLM spawns an engine process: this guard is required
    sys.exit(main())
