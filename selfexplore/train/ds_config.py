"""The DeepSpeed configuration handed to the transformers Trainer.

Batch sizes, gradient clipping, the learning rate and bf16 are left `auto`: transformers fills them from the
`TrainingArguments` built from the same `TrainConfig`, so the two can never disagree. No `optimizer` or
`scheduler` section: the Trainer then builds torch's AdamW and the transformers schedule, which run on CPU and
GPU alike (DeepSpeed's own CPU Adam would compile a C++ extension first).
"""

from __future__ import annotations

from selfexplore.config import TrainConfig


def deepspeed_config(cfg: TrainConfig) -> dict:
    config: dict = {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        # bf16 weights and activations, fp32 master weights in the optimizer (on CPU too).
        "bf16": {"enabled": "auto"},
        "zero_optimization": {"stage": cfg.zero_stage},
    }
    if cfg.zero_stage == 3:
        # Gather the sharded weights when the final model is saved, so the output is a plain HF model.
        config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    return config
