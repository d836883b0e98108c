"""The CPU side alone at scale: the real nightly run with an instant engine.

    .venv/bin/python benchmarks/cpu_side.py --pairs 100000
    .venv/bin/python benchmarks/cpu_side.py --pairs 1000000
    .venv/bin/python benchmarks/cpu_side.py --smoke          # 300 pairs, for CI

Generates N deterministic synthetic pairs (each names one channel, so one
pair is one row; about N/10 users, 10,000 products, field sizes as in
``factory.sample_data``), cached per N, then runs ``factory.pipeline.run``
in-process on a local Ray with the engine replaced by an echo stand-in:
every row gets a short, plausible copy built from the product in its
rendered prompt, instantly. Read, pass 1, join, render, the quality gate
(doing its real work: most copies pass, about 3% are written to fail so
the repair pass runs too), finalize, write and publish are all real.

Measures wall time per phase (by wrapping the pipeline's own functions),
rows/s, and peak RSS of the driver and of the Ray worker processes
(sampled every 0.5 s). Prints one JSON document; ``--json PATH`` also
writes it to a file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from factory import columns as C
from factory import sample_data

N_PRODUCTS = 10_000
ZH_PRODUCT_SHARE = 0.1
PAIRS_PER_FILE = 250_000
ROW_GROUP = 50_000
RUN_DATE = dt.date(2026, 1, 1)
# Pairs of one user never repeat a product: the k-th pair of a user takes
# the product STRIDE*k further on in its pool (STRIDE is prime to both pool sizes).
_STRIDE = 7
_USER_HASH = 7_919


# --- Synthetic inputs -------------------------------------------------------------------


def default_cache() -> Path:
    from factory.model import cache_root

    return cache_root() / "bench" / "cpu_side"


def synthetic_inputs(n_pairs: int, cache: Path | None = None, seed: int = 11) -> dict[str, str]:
    """Pairs, users and products for ``n_pairs`` pairs, written once under
    ``cache/pairs-<N>`` (reused when complete). Returns their paths."""
    folder = (cache or default_cache()) / f"pairs-{n_pairs}-seed-{seed}"
    paths = {
        "pairs": str(folder / "pairs"),
        "users": str(folder / "users.parquet"),
        "products": str(folder / "products.parquet"),
    }
    if (folder / "_COMPLETE").exists():
        return paths
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "pairs").mkdir(parents=True)
    rng = random.Random(seed)
    n_zh = int(N_PRODUCTS * ZH_PRODUCT_SHARE)
    products = sample_data.make_products(rng, n_en=N_PRODUCTS - n_zh, n_zh=n_zh)
    users = sample_data.make_users(rng, products, n=max(1, n_pairs // 10))
    pq.write_table(pa.Table.from_pylist(products, schema=sample_data._PRODUCTS_SCHEMA), paths["products"])
    pq.write_table(pa.Table.from_pylist(users, schema=sample_data._USERS_SCHEMA), paths["users"])
    for start in range(0, n_pairs, PAIRS_PER_FILE):
        table = synthetic_pairs(range(start, min(n_pairs, start + PAIRS_PER_FILE)), users, products, seed)
        pq.write_table(
            table, folder / "pairs" / f"part-{start // PAIRS_PER_FILE:04d}.parquet", row_group_size=ROW_GROUP
        )
    (folder / "_COMPLETE").write_text(
        json.dumps({"pairs": n_pairs, "users": len(users), "products": len(products)})
    )
    return paths


def synthetic_pairs(index: range, users: list[dict], products: list[dict], seed: int) -> pa.Table:
    """Pair i belongs to user i mod U (users interleave, as in a real feed);
    its product comes from the pool of the user's currency; its channel and
    campaign are drawn from a generator seeded by ``seed`` and the first index."""
    i = np.arange(index.start, index.stop, dtype=np.int64)
    n_users = len(users)
    pools = {
        cur: np.array([k for k, p in enumerate(products) if p["currency"] == cur]) for cur in ("USD", "CNY")
    }
    zh_user = np.array([u[C.LOCALE] == "zh-CN" for u in users])
    user = i % n_users
    k = i // n_users
    offset = user * _USER_HASH + k * _STRIDE
    product = np.where(
        zh_user[user], pools["CNY"][offset % len(pools["CNY"])], pools["USD"][offset % len(pools["USD"])]
    )
    draw = np.random.default_rng([seed, index.start])
    channel = draw.integers(0, len(sample_data.CHANNELS), len(i))
    campaign = draw.integers(0, len(sample_data.CAMPAIGNS), len(i))
    user_ids = np.array([u[C.USER_ID] for u in users], dtype=object)
    product_ids = np.array([p[C.PRODUCT_ID] for p in products], dtype=object)
    return pa.table(
        {
            C.USER_ID: pa.array(user_ids[user], pa.string()),
            C.PRODUCT_ID: pa.array(product_ids[product], pa.string()),
            C.CHANNEL: pa.array(np.array(sample_data.CHANNELS, dtype=object)[channel], pa.string()),
            C.CAMPAIGN_ID: pa.array(np.array(sample_data.CAMPAIGNS, dtype=object)[campaign], pa.string()),
        }
    )


# --- The echo engine ----------------------------------------------------------------------

_PRODUCT = re.compile(r"<product>(.*?) by (.*?)[,.] ")
# Plausible copy per channel that fits the channel's default limit for any
# synthetic title (longest about 45 characters).
_EN = {
    "push": "{title}: new in and ready for your next plan. Take a look.",
    "email_subject": "Meet the {title}",
    "ad_headline": "Discover {brand}",
    "sms": "{title} is in stock now. Have a look in the app.",
    "product_blurb": (
        "The {title} pairs everyday comfort with thoughtful design. A smart pick from {brand}, "
        "made to be used again and again."
    ),
}
_ZH = {
    "push": "{title}上新啦，快来看看吧。",
    "email_subject": "{title}，为你精选",
    "ad_headline": "{brand}新品上市",
    "sms": "{title}现已到货，欢迎选购。",
    "product_blurb": "{title}，设计简约，做工细致，日常使用更加方便舒适，值得拥有。",
}
# Other draws of one prompt (``--candidates``): draw d writes the d mod 3-th
# wording, so draws of a row differ as a sampling engine's do; draw 0 (and a
# run without candidates) writes the wording above.
_EN_DRAWS = {
    "push": ("{title}: just in, and ready when you are. Have a look.", "{title} is here for your next plan."),
    "email_subject": ("Your {title} is here", "New: the {title}"),
    "ad_headline": ("Meet {brand}", "Try {brand}"),
    "sms": ("{title} just arrived. See it in the app.", "New in: {title}. Find it in the app."),
    "product_blurb": (
        "The {title} brings comfort and careful design to every day. From {brand}, made to "
        "last and to be used often.",
        "Everyday comfort meets thoughtful design in the {title} from {brand}, built for daily use.",
    ),
}
_ZH_DRAWS = {
    "push": ("{title}到货啦，点开看看。", "{title}新品，等你来看。"),
    "email_subject": ("{title}，新品到了", "新品推荐：{title}"),
    "ad_headline": ("{brand}新品", "{brand}上新"),
    "sms": ("{title}已到货，快来看看。", "{title}新品上市，欢迎选购。"),
    "product_blurb": (
        "{title}，做工细致，设计简约，每天使用都很方便舒适，值得入手。",
        "{title}设计简约，做工用心，日常使用方便又舒适，推荐给你。",
    ),
}
# A copy the gate rejects (banned claim), for a small deterministic share of
# first attempts; the repair prompt (it carries "Requirements:") gets a clean one.
_FLAWED_EN = "The best {title} you will ever own."
_FLAWED_ZH = "最好的{title}。"


def echo_flawed(row_id: str, draw: int | None, reject_share: float) -> bool:
    """Whether the echo engine's first draft (or draw ``draw`` of it) of this row fails the gate."""
    if reject_share <= 0:
        return False
    key = row_id if not draw else hashlib.sha256(f"{row_id}:{draw}".encode()).hexdigest()
    return int(key[-4:], 16) < reject_share * 0x10000


def echo_copy(
    messages_json: str,
    channel: str,
    locale: str | None,
    row_id: str,
    reject_share: float,
    draw: int | None = None,
) -> str:
    prompt = json.loads(messages_json)[-1]["content"]
    m = _PRODUCT.search(prompt)
    title, brand = (m.group(1), m.group(2)) if m else ("this", "us")
    zh = (locale or "").startswith("zh")
    if "Requirements:" not in prompt and echo_flawed(row_id, draw, reject_share):
        return (_FLAWED_ZH if zh else _FLAWED_EN).format(title=title)
    wording = (_ZH if zh else _EN)[channel]
    if draw and draw % 3:
        wording = (_ZH_DRAWS if zh else _EN_DRAWS)[channel][draw % 3 - 1]
    return wording.format(title=title, brand=brand)


class EchoEngine:
    """What ``build_generate_stage``'s processor adds to a row, instantly:
    the passthrough columns, the token cap and the generation columns."""

    def __init__(self, passthrough, reject_share: float):
        self._keep = list(dict.fromkeys(list(passthrough) + [C.MAX_TOKENS]))
        self._reject_share = reject_share

    def __call__(self, batch: pa.Table) -> pa.Table:
        messages = batch[C.MESSAGES].to_pylist()
        draws = (
            batch["candidate"].to_pylist() if "candidate" in batch.column_names else [None] * batch.num_rows
        )
        texts = [
            echo_copy(m, ch, loc, rid, self._reject_share, d)
            for m, ch, loc, rid, d in zip(
                messages,
                batch[C.CHANNEL].to_pylist(),
                batch[C.LOCALE].to_pylist(),
                batch[C.ROW_ID].to_pylist(),
                draws,
            )
        ]
        out = batch.select([c for c in self._keep if c in batch.column_names])
        return (
            out.append_column(C.TEXT, pa.array(texts, pa.string()))
            .append_column(C.NUM_INPUT_TOKENS, pa.array([len(m) // 4 for m in messages], pa.int32()))
            .append_column(C.NUM_OUTPUT_TOKENS, pa.array([len(t) // 4 + 1 for t in texts], pa.int32()))
            .append_column(C.FINISH_REASON, pa.array(["stop"] * len(texts), pa.string()))
        )


def echo_generate_stage(reject_share: float) -> Callable:
    """A stand-in for ``factory.pipeline.passes.build_generate_stage``."""

    def build(engine, model_source, device, passthrough, cpu_stage_num_cpus, *args, **kwargs):
        def generate(ds):
            return ds.map_batches(
                EchoEngine,
                fn_constructor_args=(tuple(passthrough), reject_share),
                batch_format="pyarrow",
                num_cpus=cpu_stage_num_cpus,
                compute=_actors(),
            )

        return generate

    return build


def _actors():
    import ray

    return ray.data.ActorPoolStrategy(min_size=1, max_size=1)


# --- Measuring ----------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset this process's kernel-kept peak RSS (Linux); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> int | None:
    """This process's peak RSS since the last reset, as the kernel kept it
    (VmHWM): exact, where a 0.5 s sample can miss a short peak."""
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None
    return round(int(line.split()[1]) / 1024)


class MemorySampler(threading.Thread):
    """Every ``interval`` s: RSS of this process and of every process below
    it whose command line says ``ray::`` (a Ray worker). Only this process's
    tree: the machine is shared, other people's Ray workers are not ours."""

    def __init__(self, interval: float = 0.5, partial: Path | None = None):
        super().__init__(daemon=True)
        self._partial = partial  # peaks so far, rewritten every 30 s (a long run stopped early still tells)
        self._began = time.time()
        self._interval = interval
        self._halt = threading.Event()
        self.peak_driver = self.peak_workers_sum = self.peak_worker = 0
        self.peak_workers_private = self.peak_worker_private = 0
        self.peak_worker_name = ""
        self.peak_workers_count = 0
        self.samples = 0
        # CPU seconds (user + system) last seen per process: on a shared
        # machine rows per CPU-second is the figure that does not move with
        # other people's load (a process's last < 0.5 s may be missed).
        self.cpu: dict[int, tuple[str, float]] = {}
        self.load: list[float] = []
        self.timeline: list[tuple[float, int, int]] = []  # (t, driver rss, workers rss)

    def run(self) -> None:
        me = psutil.Process()
        while not self._halt.is_set():
            self._sample(me)
            self._halt.wait(self._interval)
        self._sample(me)

    def _sample(self, me: psutil.Process) -> None:
        try:
            driver = me.memory_info().rss
            t = me.cpu_times()
            self.cpu[me.pid] = ("driver", t.user + t.system)
        except psutil.Error:
            return
        self.load.append(os.getloadavg()[0])
        total = private = count = 0
        for p in me.children(recursive=True):
            try:
                cmd = " ".join(p.cmdline())
                t = p.cpu_times()
                self.cpu[p.pid] = ("workers" if "ray::" in cmd else "ray_system", t.user + t.system)
                if "ray::" not in cmd:
                    continue
                mem = p.memory_info()
            except psutil.Error:
                continue
            count += 1
            total += mem.rss
            # RSS counts the shared object-store pages a worker touched; minus
            # the shared pages it is roughly what the worker owns.
            own = mem.rss - mem.shared
            private += own
            if mem.rss > self.peak_worker:
                self.peak_worker, self.peak_worker_name = mem.rss, cmd[:60]
            self.peak_worker_private = max(self.peak_worker_private, own)
        self.peak_driver = max(self.peak_driver, driver)
        self.peak_workers_sum = max(self.peak_workers_sum, total)
        self.peak_workers_private = max(self.peak_workers_private, private)
        self.peak_workers_count = max(self.peak_workers_count, count)
        self.samples += 1
        self.timeline.append((time.time(), driver, total))
        if self._partial is not None and self.samples % 60 == 0:
            self._partial.write_text(
                json.dumps(
                    {
                        "elapsed_s": round(time.time() - self._began),
                        **self.peaks_mib(),
                        "cpu_seconds": self.cpu_seconds(),
                    }
                )
            )

    def peaks_mib(self) -> dict[str, Any]:
        mib = 2**20
        return {
            "driver_peak_rss": round(self.peak_driver / mib),
            "workers_peak_rss_sum": round(self.peak_workers_sum / mib),
            "workers_peak_private_sum": round(self.peak_workers_private / mib),
            "worker_peak_rss": round(self.peak_worker / mib),
            "worker_peak_private": round(self.peak_worker_private / mib),
            "worker_peak_name": self.peak_worker_name,
            "workers_max_count": self.peak_workers_count,
            "samples": self.samples,
        }

    def cpu_seconds(self) -> dict[str, float]:
        out = {"driver": 0.0, "workers": 0.0, "ray_system": 0.0}
        for kind, seconds in self.cpu.values():
            out[kind] += seconds
        out["total"] = sum(out.values())
        return {k: round(v, 1) for k, v in out.items()}

    def stop(self) -> None:
        self._halt.set()
        self.join()


class CallTimes:
    """Wraps functions (module, attribute, label) and records each call's
    start and end under its label."""

    def __init__(self, targets):
        self.calls: list[dict[str, Any]] = []
        self._saved = []
        for module, name, label in targets:
            fn = getattr(module, name)
            self._saved.append((module, name, fn))
            setattr(module, name, self._wrap(label, fn))

    def _wrap(self, name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.calls.append({"fn": name, "start": start, "end": time.time()})

        return timed

    def restore(self) -> None:
        for module, name, fn in self._saved:
            setattr(module, name, fn)


def phases(calls: list[dict[str, Any]], started: float, ended: float) -> dict[str, float]:
    """Pass 1 ends when the rows are staged; the pass-2 write and the repair
    write follow; publish is everything from the exactly-once check on."""

    def first(name, after=0.0):
        return next((c for c in calls if c["fn"] == name and c["start"] >= after), None)

    out: dict[str, float] = {}
    staged = first("_stage_rows")
    if staged is None:
        return out
    out["pass1_s"] = staged["end"] - started
    writes = sorted(
        (c for c in calls if c["fn"] == "_write" and c["start"] >= staged["end"]), key=lambda c: c["start"]
    )
    reuse = first("_leader_rows", staged["end"])  # only the reuse pass (prompt dedup) joins leaders
    check = first("_check_exactly_once", staged["end"])
    if writes:
        out["pass2_s"] = writes[0]["end"] - staged["end"]
        repair = [w for w in writes[1:] if reuse is None or w["start"] < reuse["start"]]
        if repair:
            out["repair_s"] = repair[0]["end"] - writes[0]["end"]
        if reuse is not None:
            out["reuse_s"] = writes[-1]["end"] - (repair[0]["end"] if repair else writes[0]["end"])
    if check is not None:
        out["publish_s"] = ended - check["start"]
    for name in ("_stage_rows", "remaining", "_check_exactly_once", "_summarize", "_settle_review_queue"):
        spent = sum(c["end"] - c["start"] for c in calls if c["fn"] == name)
        if spent:
            out[f"in_{name.strip('_')}_s"] = spent
    return {k: round(v, 1) for k, v in out.items()}


def driver_peak_by_phase(
    calls: list[dict[str, Any]], timeline: list[tuple[float, int, int]], started: float, ended: float
) -> dict[str, int]:
    """The driver's peak RSS (MiB) in each phase: where its memory goes as
    the input grows. Phases as in ``phases``; the staging is inside pass 1."""

    def first(name, after=0.0):
        return next((c for c in calls if c["fn"] == name and c["start"] >= after), None)

    staged = first("_stage_rows")
    if staged is None:
        return {}
    check = first("_check_exactly_once", staged["end"])
    spans = {
        "before_run": (0.0, started),
        "pass1_before_staging": (started, staged["start"]),
        "staging": (staged["start"], staged["end"]),
        "generation_passes": (staged["end"], check["start"] if check else ended),
        "publish": (check["start"], ended) if check else None,
    }
    out = {}
    for name, span in spans.items():
        if span is None:
            continue
        peak = max((rss for t, rss, _ in timeline if span[0] <= t <= span[1]), default=0)
        out[name] = round(peak / 2**20)
    return out


def machine() -> dict[str, Any]:
    try:
        cpu = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _git_commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
                timeout=5,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


# --- The run ------------------------------------------------------------------------------


def run_benchmark(
    n_pairs: int,
    cache: Path | None,
    output: Path,
    reject_share: float,
    num_cpus: int | None,
    partial: Path | None = None,
    pairs_per_block: int | None = None,
    timeline: Path | None = None,
    two_nodes: bool = False,
    users_join_rows: int | None = None,
) -> dict[str, Any]:
    import ray

    from factory import pipeline
    from factory.config import JobConfig
    from factory.pipeline import finish, passes, plan, resume, staging
    from factory.stages import generate

    host = machine()  # (the load average before the run)
    t0 = time.time()
    paths = synthetic_inputs(n_pairs, cache)
    inputs_s = time.time() - t0
    # The echo engine loads nothing; the job's model check wants a model folder's shape.
    model_dir = output / "no-model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.safetensors").touch()
    config = JobConfig(
        pairs=paths["pairs"],
        users=paths["users"],
        products=paths["products"],
        output=str(output / "out"),
        run_date=RUN_DATE,
        model=str(model_dir),
        force=True,
        engine={"device": "cpu"},
        # Both nodes of --two-nodes are raylets on this machine: its disk is shared.
        shared_filesystem=two_nodes,
        # The run's own threshold unless told (0: the users always through the hash join).
        **({"users_join_rows": users_join_rows} if users_join_rows is not None else {}),
    )
    passes.build_generate_stage = echo_generate_stage(reject_share)
    if pairs_per_block:  # an experiment: the pipeline's block size for the join onwards
        plan.MIN_ROWS_PER_BLOCK = plan.MAX_ROWS_PER_BLOCK = pairs_per_block
    # The labels are the phases' names (``phases``): pass 1's writes and the passes' share "_write".
    times = CallTimes(
        [
            (staging, "stage_rows", "_stage_rows"),
            (staging, "write", "_write"),
            (passes, "write", "_write"),
            (resume, "remaining", "remaining"),
            (finish, "check_exactly_once", "_check_exactly_once"),
            (finish, "summarize", "_summarize"),
            (finish, "settle_review_queue", "_settle_review_queue"),
            (passes, "_first_drafts", "joined_dataset"),
            (resume, "with_leaders", "_leader_rows"),
        ]
    )
    sampler = MemorySampler(partial=partial)
    sampler.start()
    # A local Ray of our own ("local"): without it ray.init joins any cluster
    # someone started on this machine.
    t1 = time.time()
    cluster = None
    if two_nodes:  # as in production: a head with no CPUs, every task and actor on the other node
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        # A node Cluster adds gets a 75 MiB object store unless told (seen: Ray Data held
        # back on it, 260 rows/s); ray.init's own default is 30 % of the memory.
        cluster.add_node(
            num_cpus=num_cpus or os.cpu_count(), object_store_memory=int(0.3 * psutil.virtual_memory().total)
        )
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    ray_s = time.time() - t1
    exact_peak = reset_peak_rss()
    try:
        started = time.time()
        result = pipeline.run(config)
        ended = time.time()
        driver_peak = peak_rss_mib() if exact_peak else None
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        sampler.stop()
        times.restore()
    wall = ended - started
    if timeline is not None:  # where in the run the memory goes, second by second
        timeline.write_text(
            json.dumps(
                {
                    "rss_mib": [
                        [round(t - started, 1), round(d / 2**20), round(w / 2**20)]
                        for t, d, w in sampler.timeline
                    ],
                    "rss_columns": ["seconds", "driver", "workers"],
                    "calls": [
                        [c["fn"], round(c["start"] - started, 1), round(c["end"] - started, 1)]
                        for c in times.calls
                    ],
                }
            )
        )
    cpu = sampler.cpu_seconds()
    status = result.quality.get("status", {})
    return {
        "benchmark": "cpu_side",
        "command": " ".join([".venv/bin/python", "benchmarks/cpu_side.py", *sys.argv[1:]]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "machine": host,  # load_avg_at_start tells whether the machine was quiet
        "pairs": n_pairs,
        "nodes": 2 if two_nodes else 1,
        "users_join_rows": getattr(config, "users_join_rows", None),
        "pairs_per_block": plan.rows_per_block(
            n_pairs, config.engine.replicas, generate.concurrent_batches(config.engine)
        ),
        "rows_written": result.rows_written,
        "dead_letters": result.dead_letters,
        "rows_generated": result.rows_generated,
        "rows_reused": getattr(result, "rows_reused", 0),
        "repairs": result.rows_generated + getattr(result, "rows_reused", 0) - result.rows_written,
        "status": status,
        "accepted_share": round(status.get("accepted", 0) / max(1, result.rows_written), 4),
        "seconds": {
            "inputs": round(inputs_s, 1),
            "ray_init": round(ray_s, 1),
            "run": round(wall, 1),
            **phases(times.calls, started, ended),
        },
        "rows_per_s": round(result.rows_written / wall, 1),
        # CPU seconds of this process tree from Ray's start to the end (Ray's
        # own start-up included); rows per CPU-second x 2 is what 2 idle cores
        # would give if the stages kept both busy.
        "cpu_seconds": cpu,
        "rows_per_cpu_s": round(result.rows_written / max(cpu["total"], 1e-9), 1),
        "load_avg_1m_mean_during_run": round(sum(sampler.load) / max(1, len(sampler.load)), 1),
        # The driver's peak: the kernel's high-water mark over the run when
        # available (raised to any sample taken during the run: the kernel
        # updates it from per-thread counters that can lag a few pages), else
        # the sampled peak (also kept, as driver_peak_rss_sampled).
        "memory_mib": {
            **sampler.peaks_mib(),
            "driver_peak_rss_sampled": sampler.peaks_mib()["driver_peak_rss"],
            "driver_peak_rss": (
                max(
                    [
                        driver_peak,
                        *(round(rss / 2**20) for t, rss, _ in sampler.timeline if started <= t <= ended),
                    ]
                )
                if driver_peak
                else sampler.peaks_mib()["driver_peak_rss"]
            ),
            "driver_peak_rss_method": "VmHWM" if driver_peak else "sampled every 0.5 s",
        },
        "driver_peak_mib_by_phase": driver_peak_by_phase(times.calls, sampler.timeline, started, ended),
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pairs", type=int, default=100_000, help="Synthetic pairs (= rows) to push through."
    )
    parser.add_argument("--smoke", action="store_true", help="300 pairs: checks the benchmark runs (CI).")
    parser.add_argument(
        "--reject-share",
        type=float,
        default=0.03,
        help="Share of first drafts the echo engine writes to fail the gate.",
    )
    parser.add_argument("--cache", type=Path, default=None, help="Where synthetic inputs are kept (per N).")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="Run output folder (default: a temp folder, deleted afterwards).",
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all).")
    parser.add_argument(
        "--pairs-per-block",
        type=int,
        default=None,
        help="Fix the rows per block of the generation pass (default: factory.pipeline.plan.rows_per_block).",
    )
    parser.add_argument(
        "--two-nodes",
        action="store_true",
        help="Run on a local cluster of two nodes (ray.cluster_utils): a head without CPUs, "
        "as in production, and one worker node.",
    )
    parser.add_argument(
        "--users-join-rows",
        type=int,
        default=None,
        help="The job's --users-join-rows (default: the job's; 0 sends the users through the hash join).",
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures to this file.")
    parser.add_argument(
        "--timeline",
        type=Path,
        default=None,
        help="Write the driver's and workers' RSS every 0.5 s, and the pipeline calls timed, "
        "to this JSON file.",
    )
    args = parser.parse_args(argv)
    n = 300 if args.smoke else args.pairs
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    output = args.output or Path(tempfile.mkdtemp(prefix=f"cpu-side-{n}-"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
    try:
        figures = run_benchmark(
            n,
            args.cache,
            output,
            args.reject_share,
            args.num_cpus,
            partial=args.json.with_suffix(".partial.json") if args.json else None,
            pairs_per_block=args.pairs_per_block,
            timeline=args.timeline,
            two_nodes=args.two_nodes,
            users_join_rows=args.users_join_rows,
        )
    finally:
        if args.output is None:
            shutil.rmtree(output, ignore_errors=True)
    text = json.dumps(figures, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return figures


if __name__ == "__main__":
    main()
