"""What every Ray Train worker runs: a TRL trainer under DeepSpeed, reporting checkpoints to Ray Train.

The worker gets pre-tokenised examples (an Arrow table, see `data.py`) through the object store, trains with TRL's `SFTTrainer`
or `DPOTrainer`, and finishes by reporting one last Ray Train checkpoint holding the final HF model directory
(`model/`, gathered from all ranks under ZeRO-3) and `metrics.json`. The driver copies that model out.
Periodic checkpoints (`save_steps`) are full HF/DeepSpeed checkpoints reported by `RayTrainReportCallback`;
a worker restarted after a failure resumes from the latest one.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
import warnings
from contextlib import nullcontext, suppress
from pathlib import Path

import deepspeed
import pyarrow as pa
import ray.train
import torch
from datasets import Dataset
from datasets.fingerprint import generate_random_fingerprint
from datasets.table import InMemoryTable
from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
from transformers.trainer import TRAINING_ARGS_NAME
from trl import DPOConfig as TRLDPOConfig
from trl import DPOTrainer
from trl import SFTConfig as TRLSFTConfig
from trl import SFTTrainer

from selfexplore.config import DPOConfig, TrainConfig, batch_split
from selfexplore.run_dir import TrainLogs
from selfexplore.train.ds_config import deepspeed_config
from selfexplore.train.metrics_log import MetricsLog

MODEL_DIR = "model"
"""Subdirectory of the final Ray Train checkpoint that holds the HF model."""
METRICS_FILE = "metrics.json"
"""File of the final Ray Train checkpoint that holds the worker-side metrics."""
DPO_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")

logger = logging.getLogger(__name__)


class PretokenizedDPOTrainer(DPOTrainer):
    """A `DPOTrainer` fed rows already tokenised by `data.tokenize_dpo`.

    TRL's own preparation appends EOS to every rejected response; Self-Explore's step pairs must not have it.
    """

    def __init__(self, *args, dpop_lambda: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.dpop_lambda = dpop_lambda

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset

    def _compute_loss(self, model, inputs, return_outputs):
        """TRL's loss, or with `dpop_lambda` > 0 DPO-Positive's (`dpop_loss`), which TRL does not offer."""
        if not self.dpop_lambda:
            return super()._compute_loss(model, inputs, return_outputs)
        completion = inputs["completion_mask"][:, 1:]
        # TRL's fused head returns each next token's log-probability where the label is not -100.
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        forward = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels, use_cache=False, fused_lm_head=True)

        def completion_logps(m) -> torch.Tensor:
            return (m(**forward).log_probs[:, -completion.size(1) :] * completion).sum(dim=1)

        logps = completion_logps(model)
        with torch.no_grad():
            ref_logps = completion_logps(self.ref_model)
        chosen, rejected = (logps - ref_logps).chunk(2)
        loss = dpop_loss(chosen, rejected, self.beta, self.dpop_lambda).mean()
        # The rewards TRL logs for its own losses, which `ProgressCallback` reports.
        metrics = self._metrics["train" if model.training else "eval"]
        chosen_rewards, rejected_rewards = (self.accelerator.gather(self.beta * r.detach()) for r in (chosen, rejected))
        metrics["rewards/chosen"].append(chosen_rewards.mean().item())
        metrics["rewards/rejected"].append(rejected_rewards.mean().item())
        metrics["rewards/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
        metrics["rewards/margins"].append((chosen_rewards - rejected_rewards).mean().item())
        return (loss, None) if return_outputs else loss


def dpop_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float, lam: float) -> torch.Tensor:
    """DPO-Positive (Pal et al., 2024, "Smaug"), per pair: -log sigmoid(beta * (c - r - lam * max(0, -c))), where c
    and r are the log-likelihood ratios policy/reference of the chosen and the rejected response. Plain DPO (lam = 0)
    can widen the gap by lowering both, the chosen too, which happens when the two differ in a few tokens (a step pair:
    `3 + 4 = 8` against `3 + 4 = 7`); the penalty makes a chosen response that falls below the reference cost."""
    return -torch.nn.functional.logsigmoid(beta * (chosen_logratios - rejected_logratios - lam * torch.relu(-chosen_logratios)))


class ProgressCallback(TrainerCallback):
    """Rank 0's account of training: the step (and loss) to the driver's progress bar through `progress` (a
    `launch.StepProgress` actor), every log to `metrics.jsonl` and TensorBoard (`MetricsLog`, when the run has
    `logs`) and as a line of the worker's log. Logs the last step too, so that the final loss and DPO rewards are
    always in the log history. Lines through `logging`, not `print`: Ray Train's print patch would show every
    printed line twice."""

    def __init__(self, kind: str, progress, logs: TrainLogs | None, resumed_from_step: int):
        self.kind, self.progress, self.logs, self.resumed_from_step = kind, progress, logs, resumed_from_step
        self.metrics: MetricsLog | None = None
        self.last: tuple[int, float] | None = None  # (step, time) of the previous log line

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.progress.update.remote(step=state.global_step, max_steps=state.max_steps)
            if self.logs:
                self.metrics = MetricsLog(self.logs, self.resumed_from_step)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True
        if state.is_world_process_zero:
            self.progress.update.remote(step=state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.metrics:
            self.metrics.close()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        self.progress.update.remote(loss=logs["loss"])
        if self.metrics:
            self.metrics.write(state.global_step, logs)
        extra = "".join(f" {key.split('/')[1]} {logs[key]:.3f}" for key in DPO_METRICS[2:] if key in logs)
        now = time.monotonic()
        if self.last is not None and state.global_step > self.last[0]:
            extra += f" ({(state.global_step - self.last[0]) / (now - self.last[1]):.2f} steps/s)"
        self.last = (state.global_step, now)
        logger.info(
            f"[{self.kind}] step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} "
            f"lr {logs.get('learning_rate', 0.0):.2e}{extra}"
        )


def train_loop(config: dict) -> None:
    """`train_loop_per_worker` of the `TorchTrainer`; `config` is built by `launch.fit`."""
    cfg: TrainConfig = config["cfg"]
    # Ray Train workers would otherwise start one thread per core each and oversubscribe the machine.
    threads = max(1, int(cfg.cpus_per_worker))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    # Without this DeepSpeed compiles its shared-memory CPU collective (~75 s) on first use; gloo does the job.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    # DeepSpeed calls collectives that torch deprecates, once per step: nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")
    # Adopt Ray Train's process group now: ZeRO-3 shards the weights while they load, before the Trainer would.
    deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())
    # Where the work ran, for the stage's manifest (on a cluster: which nodes trained, on what hardware).
    workers = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(workers, (ray.get_runtime_context().get_node_id(), hardware()))

    restored = ray.train.get_checkpoint()
    with restored.as_directory() if restored else nullcontext() as restored_dir:
        if restored_dir and (Path(restored_dir) / MODEL_DIR).is_dir():
            return  # a restart after the final model was reported: nothing left to do
        resume = str(Path(restored_dir) / RayTrainReportCallback.CHECKPOINT_NAME) if restored_dir else None
        # A restart (a worker lost, or the driver cut off and run again) says where it picked up. Read now: Ray
        # Train deletes old checkpoints from storage while training goes on.
        resumed_from_step = json.loads((Path(resume) / "trainer_state.json").read_text())["global_step"] if resume else 0
        with tempfile.TemporaryDirectory(prefix="selfexplore-train-") as work:
            trainer = _build_trainer(config, output_dir=work, resumed_from_step=resumed_from_step)
            result = trainer.train(resume_from_checkpoint=resume)
            metrics = {
                **_metrics(trainer, result),
                "resumed_from_step": resumed_from_step,
                "nodes": sorted({node for node, _ in workers}),
                "hardware": sorted({kind for _, kind in workers}),
            }
            _report_final(trainer, metrics, work)


def hardware() -> str:
    """What this process trains on, as one line. The trained model depends on it, not only on the run and seed:
    floating-point results differ between GPU models, and on CPUs between instruction sets (oneDNN computes bf16 with
    AMX, AVX-512 BF16 or emulation, each rounding its own way), so the same run gives another model elsewhere."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    model, flags = platform.processor() or platform.machine(), set()
    with suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    bf16 = "AMX" if "amx_bf16" in flags else "AVX-512 BF16" if "avx512_bf16" in flags else "emulated"
    limit = f", ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']}" if os.environ.get("ONEDNN_MAX_CPU_ISA") else ""
    return f"{model} (torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()} kernels, bf16 {bf16}{limit})"


def _build_trainer(config: dict, output_dir: str, resumed_from_step: int):
    cfg: TrainConfig = config["cfg"]
    kind = config["kind"]
    dataset = examples_dataset(ray.get(config["examples"]))
    tokenizer = AutoTokenizer.from_pretrained(config["init_model_dir"])
    # The arguments come first: under ZeRO-3 they make `from_pretrained` load the weights already sharded.
    args = _trl_args(kind, cfg, output_dir)
    model = load_for_training(config["init_model_dir"], cfg)
    callbacks = [ProgressCallback(kind, config["progress"], config["logs"], resumed_from_step), RayTrainReportCallback()]
    if kind == "sft":
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks
        )
    else:
        ref_model = load_for_training(config["ref_model_dir"], cfg)
        trainer = PretokenizedDPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
            dpop_lambda=cfg.dpop_lambda,
        )
    trainer.remove_callback(PrinterCallback)  # prints every log dict; ProgressCallback logs one line
    return prepare_trainer(trainer)


def load_for_training(model_dir: str, cfg: TrainConfig):
    """The model (or DPO's reference) as training runs it: fp32 weights (DeepSpeed casts them for bf16), and the
    configured attention kernel, which is not saved with the model and so must be asked for at every load."""
    attention = {} if cfg.attn_implementation == "auto" else {"attn_implementation": cfg.attn_implementation}
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **attention)


def examples_dataset(examples: pa.Table) -> Dataset:
    """The tokenised examples as the `datasets.Dataset` that TRL's trainers take."""
    # The table as it came from the object store (shared memory, no copy). A fingerprint computed by `datasets`
    # would pickle the table with dill, which disassembles a function through `print`, and Ray Train's print patch
    # then sends the bytecode to the logs. Nothing here is cached on disk, so a random fingerprint does.
    return Dataset(InMemoryTable(examples), fingerprint=generate_random_fingerprint())


def _trl_args(kind: str, cfg: TrainConfig, output_dir: str) -> TRLSFTConfig | TRLDPOConfig:
    world = ray.train.get_context().get_world_size()
    per_device, accumulation = batch_split(cfg, world)
    common = dict(
        output_dir=output_dir,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        # transformers reads a float below 1 as a fraction of the steps.
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps > 0 else cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if cfg.save_steps > 0 else "no",
        save_total_limit=1,  # every checkpoint is copied to Ray Train storage; keep one local copy
        seed=cfg.seed,
        use_cpu=not cfg.use_gpu,
        bf16=cfg.bf16,  # DeepSpeed bf16 with fp32 master weights; on CPU too (~10% faster on the tiny model)
        gradient_checkpointing=cfg.gradient_checkpointing,
        deepspeed=deepspeed_config(cfg),
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        eval_strategy="no",
    )
    if cfg.save_steps > 0:
        common["save_steps"] = cfg.save_steps
    if kind == "sft":
        # Examples arrive tokenised with labels and within max_length, so TRL has nothing left to prepare.
        return TRLSFTConfig(**common, max_length=None, dataset_kwargs={"skip_prepare_dataset": True})
    assert isinstance(cfg, DPOConfig)
    # TRL's "sft" loss: the mean NLL of the chosen tokens, added with its weight.
    losses = {cfg.loss_type: 1.0} | ({"sft": cfg.sft_weight} if cfg.sft_weight else {})
    return TRLDPOConfig(**common, beta=cfg.beta, loss_type=list(losses), loss_weights=list(losses.values()), max_length=cfg.max_length)


def _metrics(trainer, result) -> dict:
    logs = [log for log in trainer.state.log_history if "loss" in log]
    metrics = {
        "train_loss": result.training_loss,
        "first_loss": logs[0]["loss"] if logs else None,
        "final_loss": logs[-1]["loss"] if logs else None,
        "steps": trainer.state.global_step,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "steps_per_s": result.metrics.get("train_steps_per_second"),
    }
    for key in DPO_METRICS:
        if logs and key in logs[-1]:
            metrics[key] = logs[-1][key]
    return metrics


def _report_final(trainer, metrics: dict, work: str) -> None:
    """Save the trained model (all ranks take part: ZeRO-3 gathers) and report it from rank 0."""
    export = Path(work) / "export"
    # The Trainer turned the KV cache off for training and would save it off; generation needs it.
    trainer.model.config.use_cache = True
    trainer.save_model(str(export / MODEL_DIR))
    rank0 = ray.train.get_context().get_world_rank() == 0
    if rank0:
        # A pickle of the Trainer's arguments: no use to a model directory, and unsafe to load.
        (export / MODEL_DIR / TRAINING_ARGS_NAME).unlink()
        (export / METRICS_FILE).write_text(json.dumps(metrics))
    checkpoint = ray.train.Checkpoint.from_directory(str(export)) if rank0 else None
    ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"final_{trainer.state.global_step:08d}")
