"""The training stages' data at paper scale, without GPUs: reading the RFT set or the pairs, tokenising them on the
driver and handing them to the Ray Train workers, with the driver's memory and each worker's.

    python bench/scale_train.py                 # the sizes of bench/scale.py's paper-scale MATH run
    python bench/scale_train.py --scale 0.1     # a tenth of the rows

Training itself is not run (a 7B model needs GPUs); everything up to it is the stages' own code. Inputs are
synthetic, with the counts of `bench/results/scale-7123.json` (7,123 MATH problems x 100 samples): 47,826 RFT rows
(`select/rft.jsonl`), 46,973 outcome pairs (`select/pairs.jsonl`, whole solutions of 1,000-3,000 characters and
the rejected one's token ids, as `select` writes them) and 44,382 step pairs (`explore/gpairs.jsonl`: the question
and the steps before a pit uniform over 200-character steps, a completion of 500-1,500 characters, the pit step),
texts made as `bench/scale.py` makes them. The tokenizer is a 32,000-token BPE trained here on MATH's training
set (the `tokenizers` library), about 3 characters a token on these texts.

Per training stage, in a fresh process: the stage's rows (`rft.training_rows`; the pairs file read as `dpo.run`
reads it) through `tokenize_sft` / `tokenize_dpo`, `ray.put` of the examples as `launch.fit` does, then
`--workers` Ray actors on this node each build a Ray Train worker's dataset from the object (`worker._dataset`)
and read every example a batch at a time (in order; a Trainer's epoch takes shuffled batches, also without
copying the table). Reported: wall seconds of the tokenisation,
the driver's resident memory before and at its peak (VmHWM), the examples' size, and per worker its resident and
unique (USS: not shared with other processes) memory before the examples and after reading them all.
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from pathlib import Path

import psutil
import ray
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from selfexplore.config import load_config
from selfexplore.io import iter_jsonl, write_jsonl
from selfexplore.run_dir import OUTCOME_PAIRS, RFT_SET, STEP_PAIRS, RunDir
from selfexplore.stages import rft
from selfexplore.tasks import format_prompt, get_task
from selfexplore.train.data import tokenize_dpo, tokenize_sft

from record import write_report  # bench/record.py
from scale import completion, in_fresh_process, peak_mib, rss_mib, token_ids  # bench/scale.py

COUNTS = {"rft": 47_826, "dpo-outcome": 46_973, "dpo-step": 44_382}
"""bench/results/scale-7123.json: select's rft_rows and outcome_pairs, explore's step_pairs."""


def build_tokenizer(problems: list[dict], out_dir: Path) -> None:
    """A byte-level BPE of 32,000 tokens trained on the problems and solutions, saved as a HF tokenizer with BOS."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<s>", "</s>", "<pad>"]
    texts = (p[key] for p in problems for key in ("question", "solution"))
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=32_000, special_tokens=specials, show_progress=False))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>").save_pretrained(out_dir)


def write_inputs(run_dir: RunDir, problems: list[dict], scale: float) -> dict:
    """The RFT set, the outcome pairs and the step pairs, at `scale` times the paper-scale counts."""
    rng = random.Random(0)
    pick = [rng.choice(problems) for _ in range(int(max(COUNTS.values()) * scale))]
    words = {p["id"]: p["solution"].split(" ") for p in problems}

    def rft_rows():
        for p in pick[: int(COUNTS["rft"] * scale)]:
            yield {"id": p["id"], "prompt": format_prompt(p["question"]), "completion": completion(rng, words[p["id"]], p["answer"], 1000, 3000)}

    def outcome_pairs():
        for p in pick[: int(COUNTS["dpo-outcome"] * scale)]:
            rejected = completion(rng, words[p["id"]], "0", 1000, 3000)
            yield {"id": p["id"], "prompt": format_prompt(p["question"]), "chosen": completion(rng, words[p["id"]], p["answer"], 1000, 3000),
                   "rejected": rejected, "rejected_token_ids": token_ids(rng, rejected), "kind": "outcome"}

    def step_pairs():
        for p in pick[: int(COUNTS["dpo-step"] * scale)]:
            solution = completion(rng, words[p["id"]], "0", 1000, 3000)
            steps = [solution[i : i + 200] for i in range(0, len(solution), 200)]
            pit = rng.randint(1, len(steps))
            yield {"id": p["id"], "prompt": format_prompt(p["question"]) + "".join(steps[: pit - 1]),
                   "chosen": completion(rng, words[p["id"]], p["answer"], 500, 1500), "rejected": steps[pit - 1], "kind": "step", "pit_step": pit}

    written = {}
    for path, rows in ((RFT_SET, rft_rows()), (OUTCOME_PAIRS, outcome_pairs()), (STEP_PAIRS, step_pairs())):
        write_jsonl(run_dir.path(path), rows)
        written[f"{path.stage}/{path.name}"] = run_dir.path(path).stat().st_size
    return written


@ray.remote(num_cpus=0)
class DatasetReader:
    """What a Ray Train worker does with the examples before training: its dataset, read a batch at a time."""

    def __init__(self):
        from selfexplore.train.worker import examples_dataset  # noqa: F401  (TRL, DeepSpeed: in the baseline, not the data)

    def read(self, refs: list) -> dict:
        from selfexplore.train.worker import examples_dataset

        process = psutil.Process()
        before = process.memory_full_info()
        dataset = examples_dataset(ray.get(refs[0]))
        tokens = 0
        for batch in dataset.iter(batch_size=64):
            tokens += sum(len(ids) for column in batch.values() for ids in column)
        after = process.memory_full_info()
        mib = 2**20
        return {"tokens": tokens, "rss_before_mib": before.rss / mib, "rss_after_mib": after.rss / mib,
                "uss_before_mib": before.uss / mib, "uss_after_mib": after.uss / mib, "peak_rss_mib": peak_mib()}


def measure_stage(stage: str, cfg_path: str, overrides: list[str], tokenizer_dir: str, workers: int) -> dict:
    """Stage `stage`'s data path in this process (a fresh one): tokenise, put, read back in `workers` actors."""
    cfg = load_config(cfg_path, overrides)
    run_dir = RunDir.of(cfg)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    before, start = rss_mib(), time.time()
    if stage == "rft":
        data = tokenize_sft(rft.training_rows(cfg, run_dir), tokenizer, cfg.rft.max_length)
    else:
        pairs = iter_jsonl(run_dir.path(OUTCOME_PAIRS if stage == "dpo-outcome" else STEP_PAIRS))
        data = tokenize_dpo(pairs, tokenizer, cfg.dpo.max_length, cfg.dpo.max_prompt_length)
    result = {"tokenize_s": time.time() - start, "examples": data.num_examples, "dropped_too_long": data.dropped_too_long,
              "examples_mib": data.examples.nbytes / 2**20}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        ref = ray.put(data.examples)
        readers = [DatasetReader.remote() for _ in range(workers)]
        result["workers"] = ray.get([reader.read.remote([ref]) for reader in readers])
    finally:
        ray.shutdown()
    result |= {"driver_rss_before_mib": before, "driver_peak_rss_mib": peak_mib()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/math-mistral-7b.yaml", help="a paper config (its task and length limits)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the paper-scale row counts")
    parser.add_argument("--workers", type=int, default=4, help="Ray Train workers on one node (the paper config's 4 GPUs)")
    parser.add_argument("--output-dir", default="runs/scale-train", help="where the synthetic run goes (replaced)")
    parser.add_argument("--out", default="", help="result file (default bench/results/scale-train-<rft rows>.json)")
    args = parser.parse_args()

    overrides = [f"output_dir={args.output_dir}", "name=paper-scale"]
    cfg = load_config(args.config, overrides)
    run_dir = RunDir.of(cfg)
    shutil.rmtree(run_dir.root, ignore_errors=True)
    problems = get_task(cfg.task.name).load("train", cfg.task)
    tokenizer_dir = run_dir.root / "tokenizer"
    start = time.time()
    build_tokenizer(problems, tokenizer_dir)
    written = write_inputs(run_dir, problems, args.scale)
    print(f"tokenizer and inputs {written} in {time.time() - start:.0f} s", flush=True)
    report = {"config": args.config, "scale": args.scale, "workers": args.workers, "input_bytes": written, "stages": {}}
    for stage in COUNTS:
        result = in_fresh_process(measure_stage, stage, args.config, overrides, str(tokenizer_dir), args.workers)
        report["stages"][stage] = result
        worst = max(result["workers"], key=lambda w: w["uss_after_mib"] - w["uss_before_mib"])
        print(f"{stage}: {result['examples']} examples ({result['examples_mib']:.0f} MiB), tokenised in "
              f"{result['tokenize_s']:.0f} s; driver {result['driver_rss_before_mib']:.0f} MiB before, peak "
              f"{result['driver_peak_rss_mib']:.0f} MiB; a worker's unique memory {worst['uss_before_mib']:.0f} -> "
              f"{worst['uss_after_mib']:.0f} MiB, resident {worst['rss_before_mib']:.0f} -> {worst['rss_after_mib']:.0f} MiB", flush=True)
    write_report(report, f"scale-train-{int(COUNTS['rft'] * args.scale)}", args.out)


if __name__ == "__main__":
    main()
