"""Generation, adapter merging, completion log-probs, held-out loss and the round evaluator."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from evaluation.generation import generate, generate_greedy, merged_adapter
from evaluation.heldout_loss import heldout_loss
from evaluation.logprobs import completion_logprobs

PROMPTS = ["the company profit rose", "what is", "how many apples has the user bought and sold in total"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return model, tokenizer


def _lora(model: torch.nn.Module) -> PeftModel:
    """A LoRA adapter with random (non-zero) A and B, so merging actually changes weights."""
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(model, config)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_batched_greedy_matches_one_by_one(tiny) -> None:
    model, tokenizer = tiny
    batched = generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=3)
    for prompt, text in zip(PROMPTS, batched, strict=True):
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        expected = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        assert text == expected
    assert tokenizer.padding_side == "right"  # restored


def test_generation_budget_new_text_only_and_pad_token(tiny) -> None:
    model, tokenizer = tiny
    tokenizer = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tokenizer.pad_token = None
    texts = generate(model, tokenizer, PROMPTS[:2], max_new_tokens=3, batch_size=2)
    assert tokenizer.pad_token == tokenizer.eos_token
    for (text,) in texts:
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 4  # re-tokenising may merge/split
        assert not text.startswith(PROMPTS[0])


def test_sampling_is_seeded_and_returns_k(tiny) -> None:
    model, tokenizer = tiny
    state = torch.random.get_rng_state()
    a = generate(model, tokenizer, PROMPTS[:2], max_new_tokens=5, do_sample=True, num_return_sequences=3, seed=7)
    b = generate(model, tokenizer, PROMPTS[:2], max_new_tokens=5, do_sample=True, num_return_sequences=3, seed=7)
    assert a == b and all(len(x) == 3 for x in a)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched


def test_merged_adapter_is_exact_and_restores_weights(tiny_model_dir: Path) -> None:
    model = _lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    model.train()
    before = _snapshot(model)
    ids = torch.tensor([[5, 17, 42, 8, 99]])
    model.eval()
    with torch.no_grad():
        unmerged_logits = model(input_ids=ids).logits
    model.train()
    with merged_adapter(model):
        base_q = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
        assert not torch.equal(base_q, before["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"])
        model.eval()
        with torch.no_grad():
            merged_logits = model(input_ids=ids).logits
        model.train()
    torch.testing.assert_close(merged_logits, unmerged_logits, rtol=1e-4, atol=1e-5)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical, not just close
    assert not any(getattr(m, "merged", False) for m in model.modules() if hasattr(m, "merged_adapters"))


def test_generation_with_merge_equals_without_and_keeps_mode(tiny_model_dir: Path, tiny) -> None:
    _, tokenizer = tiny
    model = _lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    model.train()
    before = _snapshot(model)
    merged = generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=2, merge=True)
    plain = generate_greedy(model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=2, merge=False)
    assert merged == plain
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_completion_logprobs_match_a_single_unpadded_forward(tiny) -> None:
    model, tokenizer = tiny
    prompts = ["the stock fell", "what is the total of 3 and 4 apples the user has"]
    completions = [" negative</s>", " 7</s>"]
    scores = completion_logprobs(model, tokenizer, prompts, completions, seq_length=64, batch_size=2)
    for prompt, completion, score in zip(prompts, completions, scores, strict=True):
        p = tokenizer(prompt)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + c])).logits[0]
        logp = torch.log_softmax(logits.float(), -1)
        expected = sum(float(logp[len(p) + i - 1, tok]) for i, tok in enumerate(c))
        assert score.num_tokens == len(c)
        assert score.logprob == pytest.approx(expected, abs=1e-4)


def test_truncation_keeps_the_completion_and_cuts_the_prompt(tiny) -> None:
    model, tokenizer = tiny
    prompt = "the company profit rose"
    n_prompt = len(tokenizer(prompt)["input_ids"])
    n_completion = len(tokenizer(" positive news", add_special_tokens=False)["input_ids"])
    (whole,) = completion_logprobs(model, tokenizer, [prompt], [" positive news"], seq_length=n_prompt + 1)
    assert whole.num_tokens == n_completion  # the prompt gave way, not the completion
    (none,) = completion_logprobs(model, tokenizer, [prompt], [" positive news"], seq_length=n_completion)
    assert none.num_tokens == 0 and none.logprob == 0.0  # no room left for any prompt token: not scored


def test_heldout_loss_equals_hf_loss_with_labels(tiny) -> None:
    model, tokenizer = tiny
    rows = [{"instruction": "what is 3 + 4", "response": "7"}]
    metrics, _ = heldout_loss(model, tokenizer, rows, "alpaca", seq_length=256)
    from utils.templates import get_template

    t = get_template("alpaca")
    p = tokenizer(t.prompt(rows[0]["instruction"], tokenizer))["input_ids"]
    c = tokenizer(t.completion(rows[0]["instruction"], "7", tokenizer), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hf = model(input_ids=torch.tensor([p + c]), labels=torch.tensor([[-100] * len(p) + c])).loss
    assert metrics["loss"] == pytest.approx(float(hf), abs=1e-4)
    assert metrics["perplexity"] == pytest.approx(math.exp(float(hf)), rel=1e-4)
    assert metrics["num_tokens"] == len(c)


@pytest.fixture()
def fake_data(monkeypatch: pytest.MonkeyPatch):
    """A stand-in for utils.sft_data with invented held-out tables, so the evaluator is tested in isolation."""
    import datasets

    tables = {
        "bundled/fin_sentiment": [
            {"instruction": f"What is the sentiment of this news? shares rose {i}", "response": s, "label": s}
            for i, s in enumerate(["positive", "negative", "neutral", "positive"])
        ],
        "bundled/arithmetic": [
            {"instruction": f"how many apples {i} + 1", "response": f"{i} + 1 = {i + 1}\n#### {i + 1}"}
            for i in range(3)
        ],
        "my/sft": [{"instruction": "say hi", "response": "hi"}, {"instruction": "say no", "response": "no"}],
    }

    def load_sft_dataset(name, local_data_dir=None, dataset_sample=20000, split="train", seed=2023):
        if name not in tables or split != "test":
            raise ValueError(f"no split {split} for {name}")
        return datasets.Dataset.from_list(tables[name][:dataset_sample or None])

    import utils.sft_data

    monkeypatch.setattr(utils.sft_data, "load_sft_dataset", load_sft_dataset)
    return tables


def test_round_evaluation_metrics_mode_and_determinism(tiny_model_dir: Path, tiny, fake_data) -> None:
    from evaluation.registry import EvalSettings
    from evaluation.round_eval import RoundEvaluation

    _, tokenizer = tiny
    model = _lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    model.train()
    before = _snapshot(model)

    def round_evaluation(dataset: str, *benchmarks: str) -> RoundEvaluation | None:
        settings = EvalSettings(limit=3, batch_size=2, sft_dataset=dataset)
        return RoundEvaluation.load([(name, "eval_") for name in benchmarks], tokenizer, settings)

    sentiment = round_evaluation("bundled/fin_sentiment", "heldout_loss", "bundled_sentiment")
    first = sentiment(model)
    assert list(first) == ["eval_loss", "eval_perplexity", "eval_accuracy", "eval_macro_f1", "eval_weighted_f1"]
    assert 0.0 <= first["eval_accuracy"] <= 1.0 and first["eval_loss"] > 0
    assert sentiment(model) == first
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # --limit 3 of a shuffled test split: its first three rows, the fourth left out.
    assert [ex["reference"] for ex in sentiment.entries[1].examples] == ["positive", "negative", "neutral"]

    arithmetic = round_evaluation("bundled/arithmetic", "heldout_loss", "bundled_arithmetic")
    assert [ex["reference"] for ex in arithmetic.entries[1].examples] == ["1", "2", "3"]
    assert set(arithmetic(model)) == {"eval_loss", "eval_perplexity", "eval_exact_match"}

    assert set(round_evaluation("my/sft", "heldout_loss")(model)) == {"eval_loss", "eval_perplexity"}
    # No held-out split: that benchmark is left out once, at load; with none left, evaluation is off.
    assert round_evaluation("my/none", "heldout_loss") is None


def test_sft_task_round_benchmarks_follow_the_dataset() -> None:
    from config import RunConfig, ScriptArguments
    from federated_learning.tasks import get_task

    def names(dataset: str) -> list[str]:
        cfg = RunConfig("sft", ScriptArguments(dataset_name=dataset), None)
        return [b.name for b in get_task("sft").round_benchmarks(cfg)]

    assert names("bundled/fin_sentiment") == ["heldout_loss", "bundled_sentiment"]
    assert names("bundled/arithmetic") == ["heldout_loss", "bundled_arithmetic"]
    assert names("vicgalle/alpaca-gpt4") == ["heldout_loss"]


def test_stop_strings_cut_the_completion(tiny) -> None:
    model, tokenizer = tiny
    (free,) = generate_greedy(model, tokenizer, [PROMPTS[0]], max_new_tokens=12)
    words = free.split()
    assert len(words) >= 3, free  # the random model writes several words within 12 tokens
    (stopped,) = generate_greedy(model, tokenizer, [PROMPTS[0]], max_new_tokens=12, stop_strings=[words[2]])
    assert stopped == free[: free.find(words[2])].strip()
