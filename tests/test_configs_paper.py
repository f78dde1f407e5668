"""The paper's settings per task x model (reference/selfexplore-method.md §4-§7): the GPU-cluster configs parse,
type-check and say what the paper did. They are validated here, never run. Runs on: CPU."""

from pathlib import Path

import pytest

from selfexplore.config import load_config
from selfexplore.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "deepseek-math-7b": "deepseek-ai/deepseek-math-7b-base",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
    "llemma-7b": "EleutherAI/llemma_7b",
}
CONFIGS = [(task, model) for task in ("gsm8k", "math") for model in MODELS]


@pytest.mark.parametrize("task, model", CONFIGS)
def test_paper_settings(task, model):
    cfg = load_config(ROOT / "configs" / f"{task}-{model}.yaml")
    mistral = model == "mistral-7b"
    max_tokens = 512 if task == "gsm8k" else 1024
    assert (cfg.name, cfg.task.name, cfg.model.path) == (f"{task}-{model}", task, MODELS[model])
    sample = cfg.sample
    assert (sample.n, sample.temperature, sample.top_p, sample.max_tokens) == (100, 0.7, 1.0, max_tokens)
    assert cfg.select.max_rft_per_problem == 8
    assert (cfg.explore.k, cfg.explore.temperature, cfg.explore.max_tokens, cfg.explore.strategy) == (
        4, 0.7, max_tokens, "linear")
    assert cfg.eval.max_tokens == max_tokens
    for train in (cfg.sft, cfg.rft):
        assert (train.epochs, train.batch_size, train.lr_scheduler, train.warmup_ratio) == (5, 64, "linear", 0.0)
        assert train.learning_rate == (1e-6 if mistral else 1e-5)
        assert train.max_length == 1024 and train.use_gpu and train.bf16
    assert not cfg.rft.include_gold
    dpo = cfg.dpo
    assert (dpo.beta, dpo.loss_type, dpo.epochs, dpo.batch_size, dpo.warmup_ratio) == (0.1, "sigmoid", 3, 32, 0.1)
    assert dpo.learning_rate == (1e-7 if mistral else 1e-6)
    assert (dpo.max_length, dpo.max_prompt_length) == ((384, 256) if task == "gsm8k" else (1024, 512))
    assert cfg.engine.backend == "vllm" and cfg.engine.num_gpus >= 1


@pytest.mark.parametrize("task, rows", [("gsm8k", (7473, 1319)), ("math", (7498, 5000))])
def test_the_configured_data_loads(task, rows):
    cfg = load_config(ROOT / "configs" / f"{task}-deepseek-math-7b.yaml").task
    paths = [ROOT / cfg.train_path, ROOT / cfg.test_path]  # relative to the repository root
    if not all(path.is_file() for path in paths):
        pytest.skip(f"{cfg.train_path} / {cfg.test_path} not next to this checkout")
    cfg.train_path, cfg.test_path = map(str, paths)
    train, validation, test = (len(get_task(task).load(split, cfg)) for split in ("train", "validation", "test"))
    # 5% of the training rows are held out for validation (task.validation_fraction): what settings are tuned on.
    assert (train + validation, test) == rows and validation == round(0.05 * rows[0])
