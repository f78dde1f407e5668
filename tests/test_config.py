"""Typed run configs: YAML + dotted overrides, unknown keys and wrong types rejected. Runs on: CPU."""

from dataclasses import asdict

import pytest

from selfexplore.config import RunConfig, fingerprint, load_config
from selfexplore.errors import ConfigError
from selfexplore.run_dir import STAGES, pipeline_stages, problems, stage_fingerprint


def test_tiny_config_loads_and_overrides_apply():
    cfg = load_config("configs/tiny.yaml", ["sample.n=16", "dpo.beta=0.05", "task.arith.max_ops=4", "sft.learning_rate=1e-3"])
    assert isinstance(cfg, RunConfig)
    assert cfg.sample.n == 16 and cfg.dpo.beta == 0.05 and cfg.task.arith.max_ops == 4
    assert cfg.sft.learning_rate == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as a string; still a float here


@pytest.mark.parametrize(
    "override, message",
    [
        ("sft.learnin_rate=3", "unknown key `sft.learnin_rate` (did you mean `sft.learning_rate`?)"),
        ("sft.lr=3", "unknown key `sft.lr` (known keys: attn_implementation, batch_size,"),
        ("sample.n=many", "`sample.n` must be int, got 'many'"),
        ("sample.n=true", "`sample.n` must be int"),
        ("engine.backend=tgi", "`engine.backend` must be one of 'hf', 'vllm'"),
        ("task=arith", "`task` must be a mapping"),
        ("bogus_section.key=1", "unknown key `bogus_section`"),
        ("nonsense", "must look like `section.key=value`"),
        ("task.name=aime", "`task.name` must be one of 'arith', 'gsm8k', 'math'"),
        ("sft.num_workers=3", "`sft.batch_size`: batch_size 64 must be a multiple of per_device_batch_size"),
        ("dpo.sft_weight=-1", "`dpo.sft_weight` must be at least 0"),
        ("dpo.dpop_lambda=-1", "`dpo.dpop_lambda` must be at least 0"),
        ("dpo.dpop_lambda=5 dpo.loss_type=ipo", "`dpo.dpop_lambda` needs `dpo.loss_type: sigmoid` and `dpo.sft_weight: 0`, got 'ipo' and 0.0"),
        ("dpo.per_device_batch_size=5", "`dpo.batch_size`: batch_size 32 must be a multiple"),
        ("task.arith.min_ops=4", "`task.arith.min_ops` (4) must be at least 1 and at most `task.arith.max_ops` (3)"),
        ("task.arith.ops=+/", "`task.arith.ops` must be a non-empty subset of `+-*`, got '+/'"),
        ("task.arith.n_test=0", "`task.arith.max_operand`, `n_train` and `n_test` must be at least 1"),
        ("task.arith.swap_operands=2", "`task.arith.swap_operands` must be between 0 and 1, got 2.0"),
        ("output_dir=s3://bucket/runs", "`output_dir` 's3://bucket/runs': URIs are not supported"),
    ],
)
def test_bad_overrides_are_one_clear_error(override, message):
    with pytest.raises(ConfigError) as e:
        load_config("configs/tiny.yaml", override.split())
    assert message in str(e.value)


def test_typo_in_a_file_names_the_file_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("sample:\n  temprature: 0.7\n")
    with pytest.raises(ConfigError, match=r"run.yaml: unknown key `sample.temprature` \(did you mean `sample.temperature`\?\)"):
        load_config(path)


def test_cli_prints_a_config_mistake_as_one_line_and_exits_2(capsys):
    from selfexplore.cli import main

    assert main(["config", "configs/tiny.yaml", "rft.num_workers=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "configs/tiny.yaml: `rft.batch_size`" in err


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        load_config("nope.yaml")


def test_pair_format_retrains_only_the_step_dpo_model_and_keeps_the_exploration():
    cfg = load_config("configs/tiny.yaml")
    next_step = load_config("configs/tiny.yaml", ["explore.pair_format=next_step"])
    stale = [s for s in STAGES if stage_fingerprint(cfg, s) != stage_fingerprint(next_step, s)]
    assert stale == ["dpo-step", "eval-dpo-step"]
    more_probes = load_config("configs/tiny.yaml", ["explore.k=8"])
    assert stage_fingerprint(cfg, "explore") != stage_fingerprint(more_probes, "explore")


def test_on_policy_pairs_add_one_stage_after_rft_and_keep_the_sampling_and_both_models():
    paper = load_config("configs/tiny.yaml", ["select.rejected_from=samples"])
    on_policy = load_config("configs/tiny.yaml", ["select.rejected_from=rft_greedy"])
    assert "rft-greedy" not in pipeline_stages(paper)
    stages = pipeline_stages(on_policy)
    assert stages.index("rft") < stages.index("rft-greedy") < stages.index("explore")
    stale = [s for s in pipeline_stages(paper) if stage_fingerprint(paper, s) != stage_fingerprint(on_policy, s)]
    assert stale == ["explore", "dpo-outcome", "dpo-step", "eval-dpo-outcome", "eval-dpo-step"]
    fewer_evals = load_config("configs/tiny.yaml", ["select.rejected_from=rft_greedy", "eval.models=[dpo-step]"])
    assert [s for s in pipeline_stages(fewer_evals) if s.startswith("eval-")] == ["eval-dpo-step"]


def test_pairs_of_rft_samples_add_their_own_stage_after_rft_and_keep_the_sampling_and_both_models():
    paper = load_config("configs/tiny.yaml", ["select.rejected_from=samples"])
    rft_samples = load_config("configs/tiny.yaml", ["select.rejected_from=rft_samples"])
    stages = pipeline_stages(rft_samples)
    assert "rft-greedy" not in stages and stages.index("rft") < stages.index("rft-sample") < stages.index("explore")
    assert STAGES["explore"].needs(rft_samples) == STAGES["dpo-outcome"].needs(rft_samples) == ("rft", "rft-sample")
    stale = [s for s in pipeline_stages(paper) if stage_fingerprint(paper, s) != stage_fingerprint(rft_samples, s)]
    assert stale == ["explore", "dpo-outcome", "dpo-step", "eval-dpo-outcome", "eval-dpo-step"]


def test_the_attention_kernel_retrains_its_stages_and_runs_from_before_the_key_keep_their_models():
    auto = load_config("configs/tiny.yaml", [f"{section}.attn_implementation=auto" for section in ("sft", "rft", "dpo")])
    dpo_eager = load_config("configs/tiny.yaml", ["sft.attn_implementation=auto", "rft.attn_implementation=auto"])
    stale = [s for s in pipeline_stages(auto) if stage_fingerprint(auto, s) != stage_fingerprint(dpo_eager, s)]
    assert stale == ["dpo-outcome", "dpo-step", "eval-dpo-outcome", "eval-dpo-step"]
    # `auto` is what every run before the key used: its fingerprint is the one a config without the key had.
    without_key = {key: value for key, value in asdict(auto.sft).items() if key != "attn_implementation"}
    assert stage_fingerprint(auto, "sft") == fingerprint("sft", problems(auto), without_key, stage_fingerprint(auto, "base"))


def test_swapped_operands_regenerate_the_data_and_runs_from_before_the_key_keep_their_fingerprints():
    one_order, swapped = load_config("configs/tiny.yaml", []), load_config("configs/tiny.yaml", ["task.arith.swap_operands=0.5"])
    stale = [s for s in pipeline_stages(one_order) if stage_fingerprint(one_order, s) != stage_fingerprint(swapped, s)]
    assert stale == [s for s in pipeline_stages(one_order) if s != "base"]
    # 0 is what every run before the key had: its fingerprint is the one a config without the key had.
    without_key = asdict(one_order.task)
    del without_key["arith"]["swap_operands"]
    assert stage_fingerprint(one_order, "sft") == fingerprint("sft", without_key, asdict(one_order.sft), stage_fingerprint(one_order, "base"))
