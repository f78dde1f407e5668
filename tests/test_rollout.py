"""Rollouts through Ray Data: per-row seeds make results independent of batching, and the final shard files the
same bytes; a vLLM engine works on several batches at once; a failing engine is one clear error with every
finished row kept, and a rerun does only the rest; a rollout cut off while it rewrote its shards is finished by the
rerun.

Runs on: CPU, a local Ray (2 CPUs), the `hf` and `vllm` engines on a freshly built tiny model; ~2 minutes.
"""

import sys
import threading

import pytest
import ray

from selfexplore.config import EngineConfig, SampleConfig, TaskConfig, TinyModelConfig, VLLMConfig
from selfexplore.errors import StageError
from selfexplore.io import write_jsonl
from selfexplore.models import build_tiny_model
from selfexplore.rollout import INPUTS_DIR, iter_results, ordered_results, run_rollout, shard_files
from selfexplore.stages.sample import SampleWorker
from selfexplore.tasks import get_task


@pytest.fixture(scope="module")
def problems():
    return get_task("arith").load("train", TaskConfig())[:24]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("model") / "tiny")
    build_tiny_model(TinyModelConfig(), out)
    return out


def sample(model_dir, problems, shard_dir, worker=SampleWorker, **engine):
    cfg = SampleConfig(n=3, temperature=1.0, max_tokens=20, seed=5)
    engine_cfg = EngineConfig(dtype="float32", **engine)
    kwargs = dict(model_dir=model_dir, engine_cfg=engine_cfg, task_name="arith", sample_cfg=cfg)
    run_rollout(problems, worker, kwargs, engine_cfg, shard_dir, key="id", what="problems")
    return ordered_results(shard_dir, problems, key="id")


def test_samples_do_not_depend_on_batch_size_or_engine_count(ray_session, problems, model_dir, tmp_path):
    one = sample(model_dir, problems, tmp_path / "a", num_engines=1, rows_per_batch=24)
    two = sample(model_dir, problems, tmp_path / "b", num_engines=2, rows_per_batch=5)
    assert one == two
    assert len({s["completion"] for r in one for s in r["samples"]}) > len(problems)  # really sampled
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")  # and the same files


def shard_bytes(shard_dir) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in shard_files(shard_dir)}


class InFlightRecordingWorker(SampleWorker):
    """The sample stage's worker, stamping each result with the most batches its engine has had at once so far."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0

    def process(self, problems: list[dict]) -> list[dict]:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return [{**result, "most_in_flight": self.most_in_flight} for result in super().process(problems)]
        finally:
            with self.lock:
                self.in_flight -= 1


def test_a_vllm_engine_works_on_several_batches_at_once(ray_session, problems, model_dir, tmp_path, vllm_installed):
    """That the samples are the same as one batch at a time is tested on the vLLM pipeline run
    (tests/test_pipeline_vllm.py): one vLLM engine start here, not two (~25 s of the suite)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    engine = dict(backend="vllm", rows_per_batch=4, vllm=VLLMConfig(batches_in_flight=2))
    results = sample(model_dir, problems, tmp_path, worker=InFlightRecordingWorker, **engine)
    assert max(r.pop("most_in_flight") for r in results) == 2  # 6 batches: a second one entered while one ran
    assert sorted(r["id"] for r in iter_results(tmp_path)) == sorted(p["id"] for p in problems)  # each row once
    assert len({s["completion"] for r in results for s in r["samples"]}) > len(problems)  # really sampled


class FailingEngineWorker:
    """Echoes rows until it meets `fail_id`, then fails the way a dead vLLM engine does."""

    def __init__(self, fail_id: str | None):
        self.fail_id = fail_id

    def __call__(self, batch: dict) -> dict:
        import json

        rows = [json.loads(line) for path in batch["input"] for line in open(path, encoding="utf-8")]
        if any(row["id"] == self.fail_id for row in rows):
            raise RuntimeError("EngineDeadError: EngineCore encountered an issue (out of memory)")
        return {"result": [json.dumps(row) for row in rows], "node": ["local"] * len(rows)}


def test_a_failing_engine_is_one_clear_error_and_a_rerun_does_the_rest(ray_session, tmp_path, monkeypatch):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    monkeypatch.setattr("selfexplore.rollout.ROWS_PER_SHARD", 5)  # final files that split the rows unevenly
    # Text with line breaks of every kind: a row reaches the engine whole through its input file.
    rows = [{"id": f"p{i}", "text": "1\n2\r\n3\u2028 4\x85 5\u2029"} for i in range(12)]
    engine_cfg = EngineConfig(num_engines=1, rows_per_batch=4, backend="vllm")
    with pytest.raises(StageError) as error:
        run_rollout(rows, FailingEngineWorker, {"fail_id": "p9"}, engine_cfg, tmp_path / "cut", key="id", what="problems sampled")
    message = str(error.value)
    assert "`vllm` engine failed" in message and "EngineDeadError" in message and "engine.vllm.max_num_seqs" in message
    assert "\n" not in message
    saved = [r["id"] for r in iter_results(tmp_path / "cut")]
    # Two batches in flight (the vllm backend's default) may finish in either order: whole batches before p9's.
    assert len(set(saved)) == len(saved) and set(saved) <= {f"p{i}" for i in range(8)}
    assert f"{len(saved)}/12 rows are saved" in message

    # The rows may come as a generator, read once (explore streams them from a file).
    run_rollout((row for row in rows), FailingEngineWorker, {"fail_id": None}, engine_cfg, tmp_path / "cut", key="id", what="problems sampled")
    assert list(iter_results(tmp_path / "cut")) == rows  # each row once, in order, whole
    assert [p.name for p in shard_files(tmp_path / "cut")] == ["rows-00000.jsonl", "rows-00001.jsonl", "rows-00002.jsonl"]
    assert not list((tmp_path / "cut").glob("part-*")) and not (tmp_path / "cut" / INPUTS_DIR).exists()  # and the inputs
    # The same files as a run that never failed, in other batches.
    uncut = EngineConfig(num_engines=1, rows_per_batch=7, backend="vllm")
    run_rollout(rows, FailingEngineWorker, {"fail_id": None}, uncut, tmp_path / "uncut", key="id", what="problems sampled")
    assert shard_bytes(tmp_path / "cut") == shard_bytes(tmp_path / "uncut")


def test_a_seal_cut_off_at_any_point_is_finished_by_the_rerun(tmp_path):
    rows = [{"id": f"p{i}"} for i in range(5)]
    engine_cfg = EngineConfig(num_engines=1, rows_per_batch=2)
    # Every row done in batch shards, and a final file half written when the driver died: no engine is needed.
    write_jsonl(tmp_path / "part-00000.jsonl", [{"id": "p3"}, {"id": "p1"}])
    write_jsonl(tmp_path / "part-00001.jsonl", [{"id": "p0"}, {"id": "p4"}, {"id": "p2"}])
    (tmp_path / "rows-00000.jsonl").write_text('{"id": "p0"}\n{"id"')
    run_rollout(rows, FailingEngineWorker, {"fail_id": None}, engine_cfg, tmp_path, key="id", what="problems")
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".jsonl"] == ["rows-00000.jsonl"]
    sealed = (tmp_path / "rows-00000.jsonl").read_bytes()
    assert sealed == b"".join(f'{{"id": "p{i}"}}\n'.encode() for i in range(5))
    # Cut off after the marker, before the batch shards went: the rerun only removes them.
    write_jsonl(tmp_path / "part-00000.jsonl", [{"id": "p3"}, {"id": "p1"}])
    run_rollout(rows, FailingEngineWorker, {"fail_id": None}, engine_cfg, tmp_path, key="id", what="problems")
    assert not list(tmp_path.glob("part-*")) and (tmp_path / "rows-00000.jsonl").read_bytes() == sealed
    # Sealed for other rows (a directory copied by hand: the stage's fingerprint rules it out): a clear error.
    with pytest.raises(StageError, match="holds the results of 5 other rows, not these 3; delete it and rerun"):
        run_rollout(rows[:3], FailingEngineWorker, {"fail_id": None}, engine_cfg, tmp_path, key="id", what="problems")
