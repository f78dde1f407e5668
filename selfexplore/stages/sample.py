"""`sample`: N solutions per training problem from the SFT model, graded.

Writes `sample/samples/`: one record per problem with its N graded samples and their token ids (see
`selfexplore.rollout` for the shard layout). The stage's metrics: accuracy per sample, pass@N, counts. The `select`
stage picks the RFT set and the outcome pairs from these.
"""

from __future__ import annotations

from selfexplore.config import RunConfig
from selfexplore.engines import SamplingParams, derive_seed
from selfexplore.rollout import EngineWorker, iter_results, rollout_nodes, run_rollout
from selfexplore.run_dir import SAMPLES, Artifact, RunDir
from selfexplore.tasks import format_prompt, get_task


class SampleWorker(EngineWorker):
    def process(self, problems: list[dict]) -> list[dict]:
        cfg = self.settings["sample_cfg"]
        prompts = [format_prompt(p["question"]) for p in problems]
        params = [
            # Seeded by the problem alone: the same samples with any batch, engine count or resume point.
            SamplingParams(
                n=cfg.n,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                max_tokens=cfg.max_tokens,
                seed=derive_seed(cfg.seed, "sample", p["id"]),
            )
            for p in problems
        ]
        outputs = self.engine.generate([self.engine.encode(prompt) for prompt in prompts], params)
        results = []
        for problem, prompt, completions in zip(problems, prompts, outputs):
            samples = [
                {
                    "id": problem["id"],
                    "sample_idx": idx,
                    "prompt": prompt,
                    "completion": c.text,
                    "pred": self.task.extract_answer(c.text),
                    "correct": self.task.grade(c.text, problem["answer"]),
                    "finish_reason": c.finish_reason,
                    "n_tokens": c.n_tokens,
                    # Exploration continues exactly these tokens (re-tokenising the text can give others).
                    "token_ids": c.token_ids,
                }
                for idx, c in enumerate(completions)
            ]
            results.append({"id": problem["id"], "samples": samples})
        return results


def sampled_problems(cfg: RunConfig) -> list[dict]:
    """The training problems that are sampled: the first `sample.max_problems` (all when 0)."""
    return get_task(cfg.task.name).load("train", cfg.task)[: cfg.sample.max_problems or None]


def sample_model(cfg: RunConfig, run_dir: RunDir, model_stage: str, shards: Artifact, what: str) -> dict:
    """The `sample` settings' samples of the sampled problems from the model `model_stage` trained, into `shards`;
    their counts. (`rft-sample` samples the RFT model the same way.)"""
    worker_kwargs = dict(model_dir=run_dir.model_dir(model_stage), engine_cfg=cfg.engine, task_name=cfg.task.name, sample_cfg=cfg.sample)
    run_rollout(sampled_problems(cfg), SampleWorker, worker_kwargs, cfg.engine, run_dir.path(shards), key="id", what=what)
    stats = SampleStats()
    for result in iter_results(run_dir.path(shards)):  # one problem's samples in memory at a time
        stats.add(result["samples"])
    return {**stats.summary(), "nodes": rollout_nodes(run_dir.path(shards))}


def run(cfg: RunConfig, run_dir: RunDir) -> dict:
    return sample_model(cfg, run_dir, "sft", SAMPLES, "problems sampled")


class SampleStats:
    """Counts over the samples, gathered one problem at a time."""

    def __init__(self):
        self.problems = self.samples = self.correct = self.solved = self.truncated = self.tokens = 0

    def add(self, samples: list[dict]) -> None:
        self.problems += 1
        self.samples += len(samples)
        self.correct += sum(s["correct"] for s in samples)
        self.solved += any(s["correct"] for s in samples)
        self.truncated += sum(s["finish_reason"] == "length" for s in samples)
        self.tokens += sum(s["n_tokens"] for s in samples)

    def summary(self) -> dict:
        return {
            "problems": self.problems,
            "samples": self.samples,
            "sample_accuracy": self.correct / max(1, self.samples),
            "pass_at_n": self.solved / max(1, self.problems),
            "problems_without_correct": self.problems - self.solved,
            "truncated_samples": self.truncated,
            "generated_tokens": self.tokens,
        }
