"""The report (text, PNG figures linked from report.md) and `selfexplore status`, on synthetic run directories
written through `RunDir`'s paths: no model, no Ray.

Runs on: CPU, seconds.
"""

import re
from pathlib import Path

import pytest
from PIL import Image

from selfexplore.cli import main as cli_main
from selfexplore.config import dump_yaml, load_config
from selfexplore.io import atomic_write, write_json, write_jsonl
from selfexplore.report import pass_at_k, write_report
from selfexplore.run_dir import SAMPLES, STEP_VALUES, TRAINED_MODELS, RunDir, stage_fingerprint
from selfexplore.stages import select
from selfexplore.status import stage_status

REPO = Path(__file__).resolve().parents[1]


def synthetic_run(tmp_path: Path):
    cfg = load_config(REPO / "configs/tiny.yaml", [f"output_dir={tmp_path}", "name=synthetic"])
    run_dir = RunDir.of(cfg)
    atomic_write(run_dir.config, dump_yaml(cfg))
    return run_dir, cfg


def finish(run_dir: RunDir, cfg, name: str, metrics: dict, fingerprint: str | None = None) -> None:
    manifest = {"stage": name, "fingerprint": fingerprint or stage_fingerprint(cfg, name), "metrics": metrics, "wall_s": 12.0}
    write_json(run_dir.manifest_path(name), manifest)


def summary(correct: int, n: int = 40) -> dict:
    return {"n": n, "correct": correct, "accuracy": correct / n, "ci95": [max(0.0, correct / n - 0.1), min(1.0, correct / n + 0.12)]}


def dpo_log(margin_slope: float) -> list[dict]:
    return [
        {"step": step, "loss": 0.69 - 0.01 * step, "learning_rate": 1e-5, "rewards/margins": margin_slope * step, "rewards/accuracies": min(1.0, 0.5 + 0.03 * step)}
        for step in (1, 5, 10, 15)
    ]


@pytest.fixture
def finished(tmp_path):
    """A run with every stage's outputs that the report reads."""
    run_dir, cfg = synthetic_run(tmp_path)
    finish(run_dir, cfg, "sample", {"problems": 3, "samples": 12, "sample_accuracy": 0.25, "pass_at_n": 2 / 3})
    samples = [{"id": f"p{i}", "samples": [{"correct": j < c} for j in range(4)]} for i, c in enumerate([0, 1, 2])]
    write_jsonl(run_dir.path(SAMPLES) / "part-00000.jsonl", samples)
    finish(run_dir, cfg, "select", {"rft_rows": 3, "outcome_pairs": 3})
    finish(run_dir, cfg, "explore", {"rejected": 6, "probes": 9, "step_pairs": 5, "pit_histogram": {"1": 2, "2": 3, "4": 1}, "dropped": {"chosen_through_pit": 1, "no_chosen": 0}})
    write_jsonl(run_dir.path(STEP_VALUES), [{"id": "p0", "rejected_idx": 0, "step": s, "k": 4, "n_correct": n} for s, n in [(1, 3), (2, 1), (3, 0), (1, 4), (2, 0)]])
    for stage, slope in (("dpo-outcome", 0.02), ("dpo-step", 0.05)):
        write_jsonl(run_dir.train_logs(stage).metrics, dpo_log(slope))
    for model, correct in zip(TRAINED_MODELS, (10, 11, 8, 12)):
        evaluate(run_dir, cfg, model, correct)
    return run_dir, cfg


QUESTION = "Ana has 1 cups. Then she gets 2 more. Then she gets 4 more. Then she loses 1. How many cups does Ana have now?"
RIGHT, LUCKY, WRONG = "1 + 2 = 3\n3 + 4 = 7\n7 - 1 = 6\nThe answer is 6", "1 + 2 = 4\n4 + 4 = 7\n7 - 1 = 6\nThe answer is 6", "1 + 2 = 3\nThe answer is 3"


def evaluate(run_dir: RunDir, cfg, model: str, correct: int) -> None:
    """40 eval rows: the first `correct` solved, the first half of those with every step right, the rest by luck."""
    rows = [
        {"id": f"t{i}", "question": QUESTION, "answer": "6", "completion": RIGHT if i < correct // 2 else LUCKY if i < correct else WRONG, "correct": i < correct}
        for i in range(40)
    ]
    for split in ("validation", "test"):
        write_json(run_dir.eval_summary(model, split), summary(correct))
        write_jsonl(run_dir.eval_results(model, split), rows)
    finish(run_dir, cfg, f"eval-{model}", {"validation": summary(correct), "test": summary(correct)})


def test_pass_at_k_is_the_unbiased_estimator():
    # One problem with 1 of 4 correct: pass@1 = 1/4, pass@2 = 1 - C(3,2)/C(4,2) = 1/2, pass@4 = 1; none correct: 0.
    assert pass_at_k([(4, 1)]) == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert pass_at_k([(4, 1), (4, 0)]) == pytest.approx([0.125, 0.25, 0.375, 0.5])


def test_report_draws_every_figure_as_a_png_linked_from_report_md(finished):
    run_dir, cfg = finished
    text = write_report(run_dir, cfg)
    assert "| Self-Explore (step pairs) | 30.0% |" in text and "![" not in text  # the terminal gets no image links
    assert "| 12 / 40 | 30.0% | 15.0% |" in text  # 6 of its 12 solved problems with every step right
    assert "5 step pairs (not paired: 1 chosen through pit)." in text  # why the others made no pair
    # The same 40 problems: SFT solved the first 10, Self-Explore the first 12.
    assert "| Self-Explore (step pairs) − SFT | +5.0 | +0.0 to +12.5 | 0 / 2 |" in text
    report = run_dir.report.read_text()
    pngs = sorted(run_dir.report_assets.glob("*.png"))
    assert [p.name for p in pngs] == ["accuracy.png", "dpo_training.png", "first_pits.png", "pass_at_k.png", "step_values.png"]
    for png in pngs:
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(png) as image:
            image.verify()
            assert min(image.size) >= 300
        assert f"]({png.relative_to(run_dir.root).as_posix()})" in report


def test_report_leaves_out_the_figures_whose_data_is_missing(tmp_path):
    run_dir, cfg = synthetic_run(tmp_path)
    evaluate(run_dir, cfg, "sft", 10)
    write_report(run_dir, cfg)
    assert [p.name for p in run_dir.report_assets.glob("*.png")] == ["accuracy.png"]
    assert "(report/accuracy.png)" in run_dir.report.read_text()


def test_status_tells_done_stale_partial_and_not_started(tmp_path, capsys):
    run_dir, cfg = synthetic_run(tmp_path)
    finish(run_dir, cfg, "base", {"model": "tiny", "parameters": 870_000})
    finish(run_dir, cfg, "sft", {"steps": 60, "first_loss": 4.6, "final_loss": 0.6}, fingerprint="another config")
    write_json(run_dir.started_path("sample"), {"fingerprint": stage_fingerprint(cfg, "sample"), "started_at": "now"})
    write_jsonl(run_dir.shards("sample") / "part-00000.jsonl", [{"id": "a"}, {"id": "b"}])
    write_jsonl(run_dir.shards("sample") / "part-00001.jsonl", [{"id": "c"}])
    write_json(run_dir.started_path("select"), {"fingerprint": stage_fingerprint(cfg, "select"), "started_at": "now"})
    write_json(select.part_files(select.parts_dir(run_dir, "select"), 0)[2], {"rft_rows": 1, "outcome_pairs": 1, "problems_with_pairs": 1})
    write_json(run_dir.started_path("rft"), {"fingerprint": "another config", "started_at": "then"})
    write_json(run_dir.started_path("rft-sample"), {"fingerprint": stage_fingerprint(cfg, "rft-sample"), "started_at": "now"})
    write_jsonl(run_dir.shards("rft-sample") / "part-00000.jsonl", [{"id": "a"}, {"id": "b"}])
    for shard in range(2):  # sampled and sealed, pairing cut off
        write_json(select.part_files(select.parts_dir(run_dir, "rft-sample"), shard)[2], {"rft_rows": 1, "outcome_pairs": 1, "problems_with_pairs": 1})
    write_json(run_dir.started_path("dpo-step"), {"fingerprint": stage_fingerprint(cfg, "dpo-step"), "started_at": "now"})
    write_jsonl(run_dir.train_logs("dpo-step").metrics, [{"step": 10, "loss": 0.6}, {"step": 20, "loss": 0.5}])
    evaluate(run_dir, cfg, "sft", 10)

    states = {name: stage_status(run_dir, cfg, name) for name in ("base", "sft", "sample", "select", "rft", "dpo-step", "explore", "eval-sft")}
    assert {name: s.state for name, s in states.items()} == {
        "base": "done", "sft": "stale", "sample": "partial", "select": "partial", "rft": "stale", "dpo-step": "partial",
        "explore": "not started", "eval-sft": "done"
    }
    assert states["base"].figure == "tiny model, 0.87M parameters" and states["base"].wall_s == 12.0
    assert states["sample"].figure == "3 rows done" and states["select"].figure == "1 sample shard paired"
    assert stage_status(run_dir, cfg, "rft-sample").figure == "2 rows done, 2 sample shards paired"
    assert states["dpo-step"].figure == "trained to step 20 (last logged)"

    assert cli_main(["status", str(run_dir.root)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^sft +stale +12s  60 steps, loss 4.600 → 0.600$", out, re.M)
    assert re.search(r"^sample +partial +-  3 rows done$", out, re.M)
    assert re.search(r"^eval-sft +done +12s  validation 25.0% \(10/40\), test 25.0% \(10/40\)$", out, re.M)
    assert "best model (on validation): SFT, validation 25.0% (10/40), test 25.0% (10/40)" in out
    # An override changes the fingerprints: every stage the base model feeds is stale, the base model is not.
    assert cli_main(["status", str(run_dir.root), "model.tiny.seed=1"]) == 0
    assert re.search(r"^base +stale ", capsys.readouterr().out, re.M)
