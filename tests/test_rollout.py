"""Rollouts through Ray Data: per-row seeds make results independent of batching; a failing engine is one clear
error with every finished row kept, and a rerun does only the rest.

Runs on: CPU, a local Ray (2 CPUs), the `hf` engine on a freshly built tiny model; ~1 minute.
"""

import sys

import pytest
import ray

from selfexplore.config import EngineConfig, SampleConfig, TaskConfig, TinyModelConfig
from selfexplore.errors import StageError
from selfexplore.models import build_tiny_model
from selfexplore.rollout import iter_results, ordered_results, run_rollout
from selfexplore.stages.sample import SampleWorker
from selfexplore.tasks import get_task


@pytest.fixture(scope="module")
def ray_session():
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def problems():
    return get_task("arith").load("train", TaskConfig())[:24]


def sample(model_dir, problems, shard_dir, **engine):
    cfg = SampleConfig(n=3, temperature=1.0, max_tokens=20, seed=5)
    engine_cfg = EngineConfig(dtype="float32", **engine)
    kwargs = dict(model_dir=model_dir, engine_cfg=engine_cfg, task_name="arith", sample_cfg=cfg)
    run_rollout(problems, SampleWorker, kwargs, engine_cfg, shard_dir, key="id", what="problems")
    return ordered_results(shard_dir, problems, key="id")


def test_samples_do_not_depend_on_batch_size_or_engine_count(ray_session, problems, tmp_path):
    model_dir = str(tmp_path / "tiny")
    build_tiny_model(TinyModelConfig(), model_dir)
    one = sample(model_dir, problems, tmp_path / "a", num_engines=1, rows_per_batch=24)
    two = sample(model_dir, problems, tmp_path / "b", num_engines=2, rows_per_batch=5)
    assert one == two
    assert len({s["completion"] for r in one for s in r["samples"]}) > len(problems)  # really sampled


class FailingEngineWorker:
    """Answers rows until it meets `fail_id`, then fails the way a dead vLLM engine does."""

    def __init__(self, fail_id: str | None):
        self.fail_id = fail_id

    def __call__(self, batch: dict) -> dict:
        import json

        rows = [json.loads(text) for text in batch["row"]]
        if any(row["id"] == self.fail_id for row in rows):
            raise RuntimeError("EngineDeadError: EngineCore encountered an issue (out of memory)")
        return {"result": [json.dumps({"id": row["id"]}) for row in rows]}


def test_a_failing_engine_is_one_clear_error_and_a_rerun_does_the_rest(ray_session, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    rows = [{"id": f"p{i}"} for i in range(12)]
    engine_cfg = EngineConfig(num_engines=1, rows_per_batch=4, backend="vllm")
    with pytest.raises(StageError) as error:
        run_rollout(rows, FailingEngineWorker, {"fail_id": "p9"}, engine_cfg, tmp_path, key="id", what="problems sampled")
    message = str(error.value)
    assert "`vllm` engine failed" in message and "EngineDeadError" in message and "engine.vllm.max_num_seqs" in message
    assert "\n" not in message
    saved = [r["id"] for r in iter_results(tmp_path)]
    assert saved == [f"p{i}" for i in range(len(saved))] and f"{len(saved)}/12 rows are saved" in message

    run_rollout(rows, FailingEngineWorker, {"fail_id": None}, engine_cfg, tmp_path, key="id", what="problems sampled")
    assert sorted(r["id"] for r in iter_results(tmp_path)) == sorted(row["id"] for row in rows)  # each row once
