"""`select`: the RFT set and the outcome pairs, chosen from the samples (CPU only; never samples again).

Writes `select/rft.jsonl` ({id, prompt, completion}: distinct correct samples, at most `max_rft_per_problem` per
problem) and `select/pairs.jsonl` (outcome pairs D_pair {prompt, chosen, rejected, rejected_token_ids, id,
kind: "outcome", pit_step: null}), both in problem order, joined from per-shard parts (`select/parts/`) that Ray
tasks write in parallel; the driver copies them through a buffer.

Unlike the original code, selection is deterministic (sample order, never `set` order) and rejected solutions
are only complete ones with an answer: truncated or answer-less samples are junk negatives, not mistakes.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import ray

from selfexplore import console
from selfexplore.config import RunConfig
from selfexplore.errors import StageError, root_cause
from selfexplore.io import atomic_open, iter_jsonl, read_json, write_json, write_jsonl
from selfexplore.rollout import SEALED_FILE, shard_files
from selfexplore.run_dir import OUTCOME_PAIRS, RFT_SET, SAMPLES, Artifact, RunDir


def build_rft_set(samples: list[dict], max_per_problem: int) -> list[dict]:
    """Distinct correct solutions of one problem, in sample order, at most `max_per_problem`."""
    seen, rows = set(), []
    for s in samples:
        text = s["completion"].strip()
        if s["correct"] and text not in seen and len(rows) < max_per_problem:
            seen.add(text)
            rows.append({"id": s["id"], "prompt": s["prompt"], "completion": text})
    return rows


def build_outcome_pairs(samples: list[dict], rft_rows: list[dict]) -> list[dict]:
    """Pair each correct solution with the least similar complete wrong one; each wrong one is used once."""
    pool: dict[str, list[int]] = {}  # wrong solution text -> the tokens that produced it, in sample order
    for s in samples:
        text = s["completion"].strip()
        complete = s["finish_reason"] == "stop" and s["pred"] is not None
        if not s["correct"] and complete and text not in pool:
            pool[text] = s["token_ids"]
    pairs = []
    for row in rft_rows:
        if not pool:
            break
        rejected = min(pool, key=lambda text: difflib.SequenceMatcher(None, row["completion"], text).ratio())
        pairs.append(
            {
                "prompt": row["prompt"],
                "chosen": row["completion"],
                "rejected": rejected,
                "rejected_token_ids": pool.pop(rejected),
                "id": row["id"],
                "kind": "outcome",
                "pit_step": None,
            }
        )
    return pairs


def part_files(parts: Path, shard_idx: int) -> tuple[Path, Path, Path]:
    """Where the RFT rows, the outcome pairs and the counts of sample shard `shard_idx` go; the counts are written
    last, so that their file says the part is whole."""
    return parts / f"rft-{shard_idx:05d}.jsonl", parts / f"pairs-{shard_idx:05d}.jsonl", parts / f"counts-{shard_idx:05d}.json"


def parts_dir(run_dir: RunDir, stage: str) -> Path:
    """Where the tasks write their parts: absolute, since they may run on other nodes, in other directories."""
    return run_dir.stage_dir(stage).resolve() / "parts"


def paired_shards(run_dir: RunDir, stage: str) -> int:
    """How many sample shards have a whole part (what a cut-off stage keeps)."""
    return len(list(parts_dir(run_dir, stage).glob("counts-*.json")))


@ray.remote(num_cpus=1)
def pair_shard(shard: Path, max_per_problem: int, parts: Path, shard_idx: int) -> None:
    """The RFT rows and outcome pairs of one sample shard's problems, one problem's samples in memory at a time."""
    rft_rows, pairs = [], []
    for result in iter_jsonl(shard):
        problem_rft = build_rft_set(result["samples"], max_per_problem)
        rft_rows += problem_rft
        pairs += build_outcome_pairs(result["samples"], problem_rft)
    rft_file, pairs_file, counts_file = part_files(parts, shard_idx)
    write_jsonl(rft_file, rft_rows)
    write_jsonl(pairs_file, pairs)
    write_json(counts_file, {"rft_rows": len(rft_rows), "outcome_pairs": len(pairs), "problems_with_pairs": len({p["id"] for p in pairs})})


def pair_samples(cfg: RunConfig, run_dir: RunDir, samples: Artifact, rft_set: Artifact, pairs: Artifact) -> dict:
    """Select from the sealed samples `samples` the distinct correct solutions (`rft_set`) and the outcome pairs
    (`pairs`), with parts in the directory of the stage that writes them: the work of `select`, and of
    `rft-sample` on the RFT model's samples."""
    stage = pairs.stage
    # Pairing compares each chosen solution with every wrong one of its problem: about a second per problem at
    # MATH length, hours for a paper-scale sample set on one core. So one Ray task per sample shard, over the
    # cluster's CPUs; a finished part is kept when a cut-off stage reruns. The shards are sealed, i.e. in problem
    # order, and so the parts joined in shard order are too.
    shards = shard_files(run_dir.path(samples).resolve())  # absolute, as `parts_dir`
    parts = parts_dir(run_dir, stage)
    todo = [i for i in range(len(shards)) if not part_files(parts, i)[2].is_file()]
    if len(todo) < len(shards):
        console.say(f"  resuming: {len(shards) - len(todo)}/{len(shards)} sample shards already paired in {parts}")
    pending = [pair_shard.remote(shards[i], cfg.select.max_rft_per_problem, parts, i) for i in todo]
    with console.Progress("sample shards paired", total=len(shards), done=len(shards) - len(todo), unit="shard") as progress:
        try:
            while pending:
                ready, pending = ray.wait(pending)
                ray.get(ready)
                progress.update(len(shards) - len(pending))
        except Exception as e:  # noqa: BLE001 - a task's error arrives wrapped in Ray's, traceback and all
            raise StageError(
                f"{stage}: pairing a sample shard failed ({root_cause(e)}); the shards paired so far are kept in {parts} "
                "and a rerun does only the others"
            ) from e
    for final, column in ((rft_set, 0), (pairs, 1)):
        with atomic_open(run_dir.path(final)) as out:
            for i in range(len(shards)):
                with part_files(parts, i)[column].open(encoding="utf-8") as part:
                    shutil.copyfileobj(part, out)
    counts = [read_json(part_files(parts, i)[2]) for i in range(len(shards))]
    return {key: sum(c[key] for c in counts) for key in ("rft_rows", "outcome_pairs", "problems_with_pairs")}


def run(cfg: RunConfig, run_dir: RunDir) -> dict:
    samples = run_dir.path(SAMPLES).resolve()
    if not (samples / SEALED_FILE).is_file():
        raise StageError(
            f"{samples}: the samples are not in problem order (a run from before sample shards were sealed); remove "
            f"{run_dir.manifest_path('sample')} and run `selfexplore stage sample {run_dir.config}`: it finds every "
            "sample done and lays the shards out without sampling again"
        )
    return pair_samples(cfg, run_dir, SAMPLES, RFT_SET, OUTCOME_PAIRS)
