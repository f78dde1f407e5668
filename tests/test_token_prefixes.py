"""Exploration prefixes are cut from the tokens the model produced, not re-tokenised from text.

Runs on: CPU, no Ray, a BPE tokenizer trained here with the `tokenizers` library (a SentencePiece-style Metaspace
pre-tokenizer, so merges cross newlines the way they do in Llama-family vocabularies).
"""

import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from selfexplore.config import ExploreConfig
from selfexplore.engines import Completion
from selfexplore.stages.explore import explore_rejected, step_cuts
from selfexplore.tasks import get_task

TASK = get_task("arith")
PROMPT = "Ana has 1 cups. Then she gets 2 more. Then she gets 4 more. How many cups does Ana have now?\n"
REJECTED = "1 + 2 = 3\n3 + 4 = 8\nThe answer is 8"


@pytest.fixture(scope="module")
def bpe():
    rng = random.Random(0)
    corpus = []
    for _ in range(3000):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        corpus.append(f"Bo has {a} pens. How many now?\n{a} + {b} = {a + b}\n{a + b} - 1 = {a + b - 1}\nThe answer is {a + b - 1}")
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


class RecordingEngine:
    """Answers every probe with a wrong finish and records the token ids it was asked to continue."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, []

    def encode(self, text):
        return self.tokenizer(text).input_ids

    def generate(self, prompts, params):
        self.calls += prompts
        return [[Completion(text="\nThe answer is 0", token_ids=[], finish_reason="stop")] * p.n for p in params]


def test_bpe_tokens_merge_across_the_prompt_boundary(bpe):
    # The premise: with this vocabulary, text re-tokenisation does not reproduce what the model saw.
    prompt_ids = bpe(PROMPT).input_ids
    rejected_ids = bpe(REJECTED, add_special_tokens=False).input_ids
    assert bpe(PROMPT + REJECTED).input_ids != prompt_ids + rejected_ids


def test_probes_continue_exactly_the_model_tokens_where_string_prefixes_differ(bpe):
    prompt_ids = bpe(PROMPT).input_ids
    rejected_ids = bpe(REJECTED, add_special_tokens=False).input_ids  # what the model sampled after the prompt
    engine = RecordingEngine(bpe)
    item = {"key": "p/0", "id": "p", "rejected_idx": 0, "prompt": PROMPT, "chosen": "", "rejected_token_ids": rejected_ids, "answer": "7"}
    (result,) = explore_rejected([item], engine, TASK, ExploreConfig(k=1, strategy="linear"))

    text = bpe.decode(rejected_ids, skip_special_tokens=True)
    cuts = step_cuts(bpe, rejected_ids, TASK.split_steps(text))
    assert result["pit"] == 1 and len(engine.calls) == 1
    # Every probe is the prompt's ids followed by a slice of the model's own tokens...
    assert engine.calls[0] == prompt_ids + rejected_ids[: cuts[0]]
    # ...which decodes to the step text, while re-tokenising that text gives other ids for some step.
    string_prefixes = [bpe(PROMPT + bpe.decode(rejected_ids[:c], skip_special_tokens=True)).input_ids for c in cuts]
    assert any(ids != prompt_ids + rejected_ids[:c] for ids, c in zip(string_prefixes, cuts))
    # Steps are cut at token boundaries: a step end inside a token (here ` 3\n3` is one token) moves to its start.
    assert "".join(result["steps"]) == text and result["steps"][0] == "1 + 2 = 3\n3"


def test_step_cuts_are_the_fewest_tokens_that_hold_each_step(bpe):
    ids = bpe(REJECTED, add_special_tokens=False).input_ids
    text = bpe.decode(ids, skip_special_tokens=True)
    spans = TASK.split_steps(text)
    cuts = step_cuts(bpe, ids, spans)
    assert cuts == sorted(cuts) and cuts[-1] == len(ids)
    for (start, end), cut in zip(spans, cuts):
        need = start + len(text[start:end].rstrip(" \t"))  # the step with its newline, without trailing spaces
        assert len(bpe.decode(ids[:cut], skip_special_tokens=True)) >= need
        assert cut == 0 or len(bpe.decode(ids[: cut - 1], skip_special_tokens=True)) < need
