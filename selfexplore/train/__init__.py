"""Training shared by the sft, rft and dpo stages: Ray Train + TRL + DeepSpeed.

    metrics = train_sft(rows, init_model_dir, out_dir, cfg.sft, storage_dir, section="sft", logs=run_dir.train_logs("sft"))
    metrics = train_dpo(pairs, init_model_dir, ref_model_dir, out_dir, cfg.dpo, storage_dir, logs=run_dir.train_logs("dpo-step"))

Both need a running Ray session, read their rows once as they tokenise them on the driver (`data.py`), train on `cfg.num_workers` Ray Train workers
(`worker.py`, launched by `launch.py`) and write a plain HF model directory (safetensors + tokenizer) to
`out_dir`, atomically (in bf16 when `cfg.bf16`, else fp32). The metrics: train_loss (mean over the run),
first_loss and final_loss (first and last logged), steps, train_runtime_s and steps_per_s (the Trainer's, from
the start of `train()`), resumed_from_step (0 unless a restart resumed from a checkpoint), nodes (the Ray node
ids of the workers), examples,
dropped_too_long, wall_s (from launching Ray Train to the model in `out_dir`);
for DPO also the last logged rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins, and
dropped_empty (pairs with an empty rejected). With `logs`, every logged step is also a line of
`logs.metrics` and TensorBoard scalars in `logs.tensorboard` (`metrics_log.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer

from selfexplore.config import DPOConfig, TrainConfig
from selfexplore.run_dir import TrainLogs
from selfexplore.train.data import tokenize_dpo, tokenize_sft
from selfexplore.train.launch import fit

__all__ = ["train_dpo", "train_sft"]


def train_sft(
    rows: Iterable[dict],
    init_model_dir: str,
    out_dir: str | Path,
    cfg: TrainConfig,
    storage_dir: str | Path,
    section: str = "sft",
    logs: TrainLogs | None = None,
) -> dict:
    """Fine-tune on `{prompt, completion}` rows; the loss covers the completion and its EOS only. `section` names
    the config section `cfg` came from (`sft` or `rft`) in errors."""
    data = tokenize_sft(rows, AutoTokenizer.from_pretrained(init_model_dir), cfg.max_length)
    return fit("sft", section, data, cfg, init_model_dir, out_dir, storage_dir, logs=logs)


def train_dpo(
    rows: Iterable[dict],
    init_model_dir: str,
    ref_model_dir: str,
    out_dir: str | Path,
    cfg: DPOConfig,
    storage_dir: str | Path,
    logs: TrainLogs | None = None,
) -> dict:
    """Sigmoid DPO (beta `cfg.beta`) on `{prompt, chosen, rejected, kind}` pairs against the frozen `ref_model_dir`.

    Whole solutions and completions end with EOS, single steps do not (see `data.gets_eos`).
    """
    data = tokenize_dpo(rows, AutoTokenizer.from_pretrained(init_model_dir), cfg.max_length, cfg.max_prompt_length)
    metrics = fit("dpo", "dpo", data, cfg, init_model_dir, out_dir, storage_dir, ref_model_dir=ref_model_dir, logs=logs)
    metrics["dropped_empty"] = data.dropped_empty
    return metrics
