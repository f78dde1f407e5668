"""The DeepSpeed configuration handed to the transformers Trainer.

Batch sizes, gradient clipping and the learning rate are left `auto`: transformers fills them from the
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
        "zero_optimization": {"stage": cfg.zero_stage},
        "wall_clock_breakdown": False,
    }
    if cfg.zero_stage == 3:
        # Gather the sharded weights when the final model is saved, so the output is a plain HF model.
        config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    if cfg.bf16 and cfg.use_gpu:
        # bf16 weights and activations with fp32 master weights in the optimizer.
        config["bf16"] = {"enabled": "auto"}
    elif cfg.bf16:
        # On CPU, DeepSpeed's bf16 mode keeps no fast path; autocast keeps fp32 weights and runs matmuls in bf16.
        config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    return config
