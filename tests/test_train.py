"""Training: tokenisation rules, and SFT and DPO for real (Ray Train + TRL + DeepSpeed on CPU) on the tiny model.

Runs on: CPU, 2 cores, ~1.5 minutes (one local Ray for the module, two `TorchTrainer.fit` calls).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig as TRLDPOConfig

from selfexplore.config import DPOConfig, SFTConfig, TaskConfig, TinyModelConfig, batch_split
from selfexplore.io import DataError, read_jsonl
from selfexplore.models import build_char_tokenizer, build_tiny_model
from selfexplore.run_dir import TrainLogs
from selfexplore.tasks import format_prompt, get_task
from selfexplore.train import train_dpo, train_sft
from selfexplore.train.data import BATCH_ROWS, IGNORE_INDEX, Tokenized, gets_eos, tokenize_dpo, tokenize_sft
from selfexplore.train.launch import run_name
from selfexplore.train.metrics_log import MetricsLog
from selfexplore.train.worker import PretokenizedDPOTrainer, dpop_loss, examples_dataset


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_model(TinyModelConfig(), path)
    return str(path)


@pytest.fixture(scope="module")
def arith_rows() -> list[dict]:
    problems = get_task("arith").load("train", TaskConfig())[:256]
    return [{"prompt": format_prompt(p["question"]), "completion": p["solution"]} for p in problems]


# ------------------------------------------------------------------------------------------- tokenisation


def test_sft_tokenisation_masks_the_prompt_and_ends_with_eos():
    tok = build_char_tokenizer()
    data = tokenize_sft(
        [{"prompt": "Q?\n", "completion": "A"}, {"prompt": "long" * 10, "completion": "x"}], tok, max_length=20
    )
    assert data.dropped_too_long == 1 and data.num_examples == 1
    ((ids, labels),) = zip(*(data.examples[c].to_pylist() for c in ("input_ids", "labels")))
    assert ids == [tok.bos_token_id, *tok.convert_tokens_to_ids(list("Q?\nA")), tok.eos_token_id]
    assert labels == [IGNORE_INDEX] * 4 + ids[4:]


def test_dpo_tokenisation_puts_eos_on_whole_solutions_only():
    tok = build_char_tokenizer()
    eos = tok.eos_token_id
    rows = [
        {"prompt": "Q\n", "chosen": "1 + 1 = 2\nThe answer is 2", "rejected": "1 + 1 = 3\n", "kind": "step"},
        {"prompt": "Q\n", "chosen": "The answer is 2", "rejected": "The answer is 3", "kind": "outcome"},
        {"prompt": "Q\n", "chosen": "The answer is 2", "rejected": "", "kind": "step"},
        {"prompt": "Q" * 30, "chosen": "a", "rejected": "b", "kind": "outcome"},
        {"prompt": "Q\n", "chosen": "a" * 40, "rejected": "b", "kind": "outcome"},
        {"prompt": "Q\n", "chosen": "1 + 1 = 2\n", "rejected": "1 + 1 = 3\n", "kind": "next_step"},
    ]
    data = tokenize_dpo(rows, tok, max_length=40, max_prompt_length=20)
    assert (data.num_examples, data.dropped_empty, data.dropped_too_long) == (3, 1, 2)
    step, outcome, next_step = data.examples.to_pylist()
    assert step["prompt_ids"][0] == tok.bos_token_id
    assert step["chosen_ids"][-1] == eos and outcome["chosen_ids"][-1] == eos
    assert step["rejected_ids"] == tok.convert_tokens_to_ids(list("1 + 1 = 3\n"))  # the pit step, no EOS
    assert outcome["rejected_ids"][-1] == eos
    assert next_step["chosen_ids"] == tok.convert_tokens_to_ids(list("1 + 1 = 2\n"))  # one step each side, no EOS
    assert next_step["rejected_ids"] == step["rejected_ids"]
    assert [gets_eos(kind) for kind in ("outcome", "step", "next_step")] == [(True, True), (True, False), (False, False)]
    with pytest.raises(DataError, match="kind"):
        tokenize_dpo([{**rows[0], "kind": "final"}], tok, 40, 20)
    with pytest.raises(DataError, match="row 0 lacks"):
        tokenize_dpo([{"prompt": "Q", "chosen": "a"}], tok, 40, 20)


def test_rows_are_read_once_as_a_stream_and_tokenised_a_batch_at_a_time_into_int32_chunks():
    tok = build_char_tokenizer()
    rows = [{"prompt": f"{i} + 1?\n", "completion": f"{i} + 1 = {i + 1}\nThe answer is {i + 1}"} for i in range(BATCH_ROWS + 5)]
    rows.insert(3, {"prompt": "Q\n", "completion": "x" * 200})  # dropped: the batches still line up with the rows
    data = tokenize_sft(iter(rows), tok, max_length=64)
    assert data.dropped_too_long == 1 and data.num_examples == len(rows) - 1
    assert data.examples.schema.field("input_ids").type == pa.list_(pa.int32())
    assert [len(chunk) for chunk in data.examples["input_ids"].chunks] == [BATCH_ROWS - 1, 6]
    one_by_one = [tokenize_sft([row], tok, max_length=64).examples.to_pylist() for row in rows if len(row["completion"]) < 200]
    assert data.examples.to_pylist() == [example for (example,) in one_by_one]
    with pytest.raises(DataError, match="no training rows"):
        tokenize_sft(iter([]), tok, max_length=64)


def test_run_name_names_the_examples_not_their_chunking():
    rows = [{"prompt": f"{i}?\n", "completion": f"{i} + 1 = {i + 1}"} for i in range(BATCH_ROWS + 5)]
    data = tokenize_sft(rows, build_char_tokenizer(), max_length=64)
    rechunked = Tokenized(pa.Table.from_batches(data.examples.combine_chunks().to_batches(max_chunksize=100)))
    sliced = Tokenized(pa.concat_tables([data.examples.slice(0, 7), data.examples.slice(7)]))
    cfg = SFTConfig()
    names = {run_name("sft", cfg, d, []) for d in (data, rechunked, sliced)}
    assert len(names) == 1
    one_token_changed = data.examples.to_pylist()
    one_token_changed[-1]["labels"][-2] += 1
    assert run_name("sft", cfg, Tokenized(pa.Table.from_pylist(one_token_changed, schema=data.examples.schema)), []) not in names


def test_a_tokenizer_without_eos_is_one_clear_error():
    tok = build_char_tokenizer()
    tok.eos_token = None
    with pytest.raises(DataError, match="no EOS token"):
        tokenize_sft([{"prompt": "Q", "completion": "A"}], tok, max_length=20)


def test_batch_split():
    assert batch_split(SFTConfig(batch_size=64), world_size=2) == (32, 1)
    assert batch_split(SFTConfig(batch_size=64, per_device_batch_size=8), world_size=2) == (8, 4)
    with pytest.raises(ValueError, match="multiple"):
        batch_split(SFTConfig(batch_size=64, per_device_batch_size=12), world_size=2)


def test_metrics_log_resumed_at_a_checkpoint_drops_the_later_steps_of_the_cut_off_run(tmp_path):
    logs = TrainLogs(tmp_path / "metrics.jsonl", tmp_path / "tensorboard")
    cut_off = MetricsLog(logs, resumed_from_step=0)
    for step in (10, 20, 30):
        cut_off.write(step, {"loss": 1.0 / step})
    cut_off.close()
    resumed = MetricsLog(logs, resumed_from_step=20)  # the last checkpoint was at step 20
    resumed.write(30, {"loss": 0.03})
    resumed.close()
    assert [(row["step"], row["loss"]) for row in read_jsonl(logs.metrics)] == [(10, 0.1), (20, 0.05), (30, 0.03)]
    assert len(list(logs.tensorboard.glob("events.out.tfevents.*"))) == 2  # TensorBoard hides the first run's step 30


# ------------------------------------------------------------------------------------------- training


def test_sft_learns_and_writes_a_loadable_model(ray_session, tiny_model, arith_rows, tmp_path):
    cfg = SFTConfig(max_steps=12, batch_size=32, learning_rate=3e-3, warmup_steps=2, logging_steps=4)
    out = tmp_path / "sft"
    logs = TrainLogs(tmp_path / "metrics.jsonl", tmp_path / "tensorboard")
    metrics = train_sft(arith_rows, tiny_model, out, cfg, tmp_path / "ray", logs=logs)

    assert metrics["steps"] == 12 and metrics["examples"] == len(arith_rows) and metrics["dropped_too_long"] == 0
    assert metrics["final_loss"] < metrics["first_loss"] - 0.5
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"
    ]
    assert not list(tmp_path.glob(".sft.*"))  # the temporary sibling is gone
    assert not list((tmp_path / "ray").iterdir())  # Ray Train's checkpoints are deleted once the model is out
    logged = read_jsonl(logs.metrics)  # every logged step, the first one too, from rank 0 only
    assert [row["step"] for row in logged] == [1, 4, 8, 12] and logged[-1]["loss"] == metrics["final_loss"]
    assert list(logs.tensorboard.glob("events.out.tfevents.*"))

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.use_cache
    batch = tok([arith_rows[0]["prompt"]], return_tensors="pt")
    generated = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert generated.shape[1] > batch["input_ids"].shape[1]


def test_dpo_positive_loss_is_dpo_plus_a_penalty_on_a_chosen_response_below_the_reference(tiny_model, arith_rows, tmp_path):
    """The DPO-Positive override against log-likelihoods computed here from plain logits (in-process TRL, no Ray)."""
    rows = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": r["completion"].split("\n")[0] + "1\n", "kind": "step"} for r in arith_rows[:8]]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model)
    torch.manual_seed(0)
    with torch.no_grad():  # a policy away from the reference: some chosen responses above it, some below
        for weight in policy.parameters():
            weight.add_(0.05 * torch.randn_like(weight))
    lam, beta = 5.0, 0.1
    args = TRLDPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, beta=beta, use_cpu=True, report_to="none")
    dataset = examples_dataset(tokenize_dpo(rows, tokenizer, 256, 192).examples)
    trainer = PretokenizedDPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=dataset, processing_class=tokenizer, dpop_lambda=lam)
    batch = next(iter(trainer.get_train_dataloader()))
    policy.eval()

    def sequence_logps(model) -> torch.Tensor:
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        token_logps = logits.log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
        return (token_logps * batch["completion_mask"][:, 1:]).sum(dim=1)

    chosen, rejected = (sequence_logps(policy) - sequence_logps(reference)).chunk(2)
    assert (chosen < 0).any() and (chosen > 0).any()  # both sides of the penalty's kink are exercised
    with torch.no_grad():
        loss = trainer._compute_loss(policy, batch, return_outputs=False)
    assert loss.item() == pytest.approx(dpop_loss(chosen, rejected, beta, lam).mean().item(), rel=1e-4)
    plain = -torch.nn.functional.logsigmoid(beta * (chosen - rejected))
    assert torch.allclose(dpop_loss(chosen, rejected, beta, 0.0), plain)
    assert torch.equal(dpop_loss(chosen, rejected, beta, lam)[chosen > 0], plain[chosen > 0])
    assert torch.all(dpop_loss(chosen, rejected, beta, lam)[chosen < 0] > plain[chosen < 0])
    trainer.dpop_lambda = 0.0  # TRL's own sigmoid loss sees the same log-likelihoods
    with torch.no_grad():
        assert trainer._compute_loss(policy, batch, return_outputs=False).item() == pytest.approx(plain.mean().item(), rel=1e-4)


def test_dpo_with_an_nll_term_on_both_pair_kinds_under_zero3_with_two_workers(ray_session, tiny_model, arith_rows, tmp_path):
    pairs = []
    for i, row in enumerate(arith_rows[:16]):
        first, rest = row["completion"].split("\n", 1)
        pit = first + "1\n"  # a wrong first step
        # Odd rows: a whole wrong solution (outcome pair); even rows: the pit step alone (step pair).
        rejected, kind = (pit + rest, "outcome") if i % 2 else (pit, "step")
        pairs.append({"prompt": row["prompt"], "chosen": row["completion"], "rejected": rejected, "kind": kind})
    pairs.append({**pairs[0], "prompt": "x" * 300})  # longer than max_prompt_length: dropped, counted
    cfg = DPOConfig(
        max_steps=4, batch_size=8, learning_rate=1e-3, logging_steps=2, zero_stage=3, num_workers=2,
        max_length=256, max_prompt_length=160, sft_weight=1.0,  # plain DPO runs in the pipeline tests
    )
    out = tmp_path / "dpo"
    metrics = train_dpo(pairs, tiny_model, tiny_model, out, cfg, tmp_path / "ray")

    assert metrics["steps"] == 4 and metrics["examples"] == 16 and metrics["dropped_too_long"] == 1
    assert metrics["rewards/margins"] > 0  # four steps at this learning rate already separate the pairs
    trained = load_file(out / "model.safetensors")
    initial = load_file(f"{tiny_model}/model.safetensors")
    assert trained.keys() == initial.keys()  # gathered from the ZeRO-3 shards: every weight, full shape
    assert all(trained[k].shape == initial[k].shape for k in initial)
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)
