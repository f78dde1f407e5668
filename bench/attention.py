"""Training speed by attention kernel: the demo's SFT and DPO with transformers' default (sdpa) and with eager.

    python bench/attention.py                   # tiny model, 150 SFT and 45 DPO steps, 2 workers, ~8 minutes

Both sides run our path (`selfexplore.train.train_sft` / `train_dpo`: Ray Train + TRL + DeepSpeed, the settings of
configs/tiny.yaml: bf16, ZeRO-2, two 1-CPU workers) on the same model, tokenised examples, steps and seeds; only
`attn_implementation` differs. Samples/s = steps x global batch / the Trainer's own `train_runtime`. The final
losses show both train the same model up to rounding. Writes `bench/results/attention.json`; run it alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ray
import torch

from selfexplore.models import build_tiny_model

from record import write_report  # bench/record.py
from train import MODELS, bench_configs, ours, rows_and_pairs, start_ray  # bench/train.py

KERNELS = ("auto", "eager")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft-steps", type=int, default=150)
    parser.add_argument("--dpo-steps", type=int, default=45)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="attention-bench-"))
    model_dir = str(work / "model")
    parameters = build_tiny_model(MODELS["tiny"], model_dir)
    rows, pairs = rows_and_pairs(2000)
    sft, dpo = bench_configs(args.sft_steps, args.dpo_steps)
    results: dict = {}
    start_ray()
    try:
        for kind, cfg, data in (("sft", sft, rows), ("dpo", dpo, pairs)):
            runs = {
                kernel: ours(kind, model_dir, data, type(cfg)(**{**vars(cfg), "attn_implementation": kernel}), work / kernel)
                for kernel in KERNELS
            }
            runs["eager_over_auto"] = round(runs["eager"]["samples_per_s"] / runs["auto"]["samples_per_s"], 3)
            results[kind] = runs
            print(kind, runs, flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(work)
    report = {
        "command": f"python bench/attention.py --sft-steps {args.sft_steps} --dpo-steps {args.dpo_steps}",
        "model": {"name": "tiny", "parameters": parameters},
        "settings": {kind: {"batch_size": cfg.batch_size, "num_workers": cfg.num_workers, "bf16": cfg.bf16, "zero_stage": cfg.zero_stage}
                     for kind, cfg in (("sft", sft), ("dpo", dpo))},
        "results": results,
    }
    write_report(report, "attention", args.out)


if __name__ == "__main__":
    main()
