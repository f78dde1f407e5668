"""Training throughput: SFT and DPO through our Ray Train + TRL + DeepSpeed path against plain TRL in one process.

    python bench/train.py                       # tiny model (0.9M), 60 SFT steps and 30 DPO steps, ~6 minutes
    python bench/train.py --model small         # ~10M parameters: compute-bound steps

Both sides train the same model on the same tokenised examples (`selfexplore.train.data`) for the same steps,
batch size, learning rate and precision (the `sft`/`dpo` settings of configs/tiny.yaml, bf16 on):
- plain: TRL's `SFTTrainer` / `DPOTrainer` in this process, no Ray, no DeepSpeed, one thread per worker-equivalent;
- ours: `selfexplore.train.train_sft` / `train_dpo` with 1 and 2 Ray Train workers (one CPU and thread each).
Samples/s = steps x global batch / the Trainer's own `train_runtime` (start-up apart); wall_s adds model loading
and, for ours, Ray Train's start and the model copy-out (`ours_over_plain_wall`: a fixed cost of seconds, which
matters on a toy run and not on an hour of training). Goal: ours with 1 worker >= 0.8x plain.

Writes `bench/results/train-<model>.json`. Run it alone: on 2 cores any other load skews both sides.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pyarrow as pa
import ray
import torch
from transformers import AutoTokenizer

from selfexplore.config import DPOConfig, SFTConfig, TaskConfig, TinyModelConfig, load_config
from selfexplore.models import build_tiny_model
from selfexplore.tasks import format_prompt, get_task
from selfexplore.train import train_dpo, train_sft
from selfexplore.train.data import tokenize_dpo, tokenize_sft

from record import write_report  # bench/record.py

MODELS = {
    "tiny": TinyModelConfig(max_position_embeddings=256),
    "small": TinyModelConfig(hidden_size=384, num_layers=6, num_heads=6, intermediate_size=1024, max_position_embeddings=256),
}


def rows_and_pairs(n: int) -> tuple[list[dict], list[dict]]:
    """Gold SFT rows, and DPO pairs of both kinds (a wrong first step: whole solution or the step alone)."""
    problems = get_task("arith").load("train", TaskConfig())[:n]
    rows = [{"prompt": format_prompt(p["question"]), "completion": p["solution"]} for p in problems]
    pairs = []
    for i, row in enumerate(rows):
        first, rest = row["completion"].split("\n", 1)
        pit = first + "1\n"
        rejected, kind = (pit + rest, "outcome") if i % 2 else (pit, "step")
        pairs.append({"prompt": row["prompt"], "chosen": row["completion"], "rejected": rejected, "kind": kind})
    return rows, pairs


def plain(kind: str, model_dir: str, examples: pa.Table, cfg: SFTConfig | DPOConfig, work: Path) -> dict:
    """What a user would write without us: the TRL trainer in one process."""
    from datasets import Dataset
    from datasets.table import InMemoryTable
    from trl import DPOConfig as TRLDPOConfig
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from selfexplore.train.worker import PretokenizedDPOTrainer, load_for_training

    start = time.monotonic()
    common = dict(
        output_dir=str(work / f"plain-{kind}"), per_device_train_batch_size=cfg.batch_size, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_steps,
        bf16=cfg.bf16, use_cpu=True, save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=cfg.logging_steps,
        seed=cfg.seed, dataloader_num_workers=0,
    )
    model = load_for_training(model_dir, cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = Dataset(InMemoryTable(examples))
    if kind == "sft":
        args = TRLSFTConfig(**common, max_length=None, dataset_kwargs={"skip_prepare_dataset": True})
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    else:
        ref = load_for_training(model_dir, cfg)
        # TRL's DPOTrainer with its own tokenisation skipped: both sides train on the same token ids.
        args = TRLDPOConfig(**common, beta=cfg.beta, loss_type=[cfg.loss_type], max_length=cfg.max_length)
        trainer = PretokenizedDPOTrainer(model=model, ref_model=ref, args=args, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()
    runtime = result.metrics["train_runtime"]
    return {"train_runtime_s": round(runtime, 2), "samples_per_s": round(cfg.max_steps * cfg.batch_size / runtime, 1), "wall_s": round(time.monotonic() - start, 2)}


def ours(kind: str, model_dir: str, data: list[dict], cfg: SFTConfig | DPOConfig, work: Path) -> dict:
    out, storage = work / f"ours-{kind}-{cfg.num_workers}", work / f"storage-{kind}-{cfg.num_workers}"
    if kind == "sft":
        metrics = train_sft(data, model_dir, out, cfg, storage)
    else:
        metrics = train_dpo(data, model_dir, model_dir, out, cfg, storage)
    runtime = metrics["train_runtime_s"]
    return {
        "train_runtime_s": round(runtime, 2),
        "samples_per_s": round(cfg.max_steps * cfg.batch_size / runtime, 1),
        "wall_s": metrics["wall_s"],
        "final_loss": metrics["final_loss"],
    }


def bench_configs(sft_steps: int, dpo_steps: int) -> tuple[SFTConfig, DPOConfig]:
    """configs/tiny.yaml's `sft` and `dpo` settings for the given steps, checkpoints off: the training benchmarks
    measure training, not storage."""
    tiny = load_config(Path(__file__).parents[1] / "configs" / "tiny.yaml")
    sft = SFTConfig(**{**vars(tiny.sft), "max_steps": sft_steps, "save_steps": 0, "logging_steps": sft_steps})
    dpo = DPOConfig(**{**vars(tiny.dpo), "max_steps": dpo_steps, "save_steps": 0, "logging_steps": dpo_steps})
    return sft, dpo


def start_ray() -> None:
    """Local Ray with every CPU, one thread per process, quiet."""
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--sft-steps", type=int, default=60)
    parser.add_argument("--dpo-steps", type=int, default=30)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    model_dir = str(work / "model")
    parameters = build_tiny_model(MODELS[args.model], model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows, pairs = rows_and_pairs(2000)
    sft, dpo = bench_configs(args.sft_steps, args.dpo_steps)  # on both sides
    examples = {
        "sft": tokenize_sft(rows, tokenizer, sft.max_length).examples,
        "dpo": tokenize_dpo(pairs, tokenizer, dpo.max_length, dpo.max_prompt_length).examples,
    }
    results = {}
    start_ray()
    try:
        for kind, cfg, data in (("sft", sft, rows), ("dpo", dpo, pairs)):
            results[kind] = {"plain": plain(kind, model_dir, examples[kind], cfg, work)}
            for workers in (1, 2):
                run = ours(kind, model_dir, data, type(cfg)(**{**vars(cfg), "num_workers": workers}), work)
                run["ours_over_plain"] = round(run["samples_per_s"] / results[kind]["plain"]["samples_per_s"], 3)
                run["ours_over_plain_wall"] = round(results[kind]["plain"]["wall_s"] / run["wall_s"], 3)
                results[kind][f"ours_{workers}_workers"] = run
            print(kind, results[kind], flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(work)
    report = {
        "command": f"python bench/train.py --model {args.model} --sft-steps {args.sft_steps} --dpo-steps {args.dpo_steps}",
        "model": {"name": args.model, "parameters": parameters},
        "settings": {"sft": {"batch_size": sft.batch_size, "bf16": sft.bf16, "zero_stage": sft.zero_stage},
                     "dpo": {"batch_size": dpo.batch_size, "bf16": dpo.bf16, "zero_stage": dpo.zero_stage}},
        "results": results,
    }
    write_report(report, f"train-{args.model}", args.out)


if __name__ == "__main__":
    main()
