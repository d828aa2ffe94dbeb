"""Fine-tuning on winners and pairs, with a tiny randomly initialised Llama built here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from tiny_llama import build_tiny_llama  # noqa: E402

from adloop.generators import (  # noqa: E402
    TRAINING_RECORD,
    PreferencePair,
    SFTExample,
    TrainingConfig,
    TrainingError,
    completion_logprobs,
    dataset_hash,
    fine_tune,
    preference_margins,
    sft_loss,
    train_version,
)
from adloop.generators.likelihood import (  # noqa: E402
    sequence_logprobs,
    shared_prompt_logprobs,
)
from adloop.generators.training_data import collate, encode, pad_id  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; more only add contention on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


CORPUS = [
    "Write a headline for handmade gold rings.",
    "Rings made to measure, order today",
    "Fine jewellery for every day",
    "Save 20% on diamond necklaces now",
    "Luxury earrings, crafted by hand",
    "Discover bespoke bracelets",
    "Shop the new collection",
]


def build_tiny_model(seed: int = 0):
    """A 2-layer Llama with a byte-level BPE tokenizer trained on CORPUS (random weights)."""
    return build_tiny_llama(
        CORPUS * 4,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        unk="<unk>",
        vocab_size=320,
        seed=seed,
        max_position_embeddings=256,
        # Wider than the usual 0.02 so a few steps visibly change what the model prefers.
        initializer_range=0.2,
    )


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    """Write the tiny model and tokenizer as a normal model directory."""
    model, tokenizer = build_tiny_model(seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


PROMPT = "Write a headline for handmade gold rings."
WINNERS = [
    SFTExample(prompt=PROMPT, completion="Rings made to measure, order today", weight=2.0),
    SFTExample(prompt=PROMPT, completion="Save 20% on diamond necklaces now", weight=1.0),
]
PAIRS = [
    PreferencePair(
        prompt=PROMPT,
        chosen="Rings made to measure, order today",
        rejected="Shop the new collection",
        weight=1.0,
    ),
    PreferencePair(
        prompt=PROMPT,
        chosen="Save 20% on diamond necklaces now",
        rejected="Discover bespoke bracelets",
        weight=0.5,
    ),
]


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_sft_moves_weights_and_lowers_loss_on_winners(lora: bool) -> None:
    model, tokenizer = build_tiny_model()
    before_weights = _weights(model)
    before = sft_loss(model, tokenizer, WINNERS)
    config = TrainingConfig(
        lora=lora,
        sft_steps=12,
        dpo_steps=0,
        batch_size=2,
        learning_rate=1e-2 if lora else 3e-3,
        seed=1,
    )
    trained, metrics = fine_tune(model, tokenizer, sft_examples=WINNERS, config=config)
    after = sft_loss(trained, tokenizer, WINNERS)

    assert after < before - 0.5
    assert metrics["sft_loss_before"] == pytest.approx(before)
    assert metrics["sft_loss_after"] == pytest.approx(after)
    after_weights = _weights(trained)
    # Merged LoRA gives back the plain model's parameter names, with some tensors changed.
    assert set(after_weights) == set(before_weights)
    changed = [n for n in before_weights if not torch.equal(before_weights[n], after_weights[n])]
    assert changed
    assert any("q_proj" in n for n in changed)


def test_lift_weights_hold_across_batches() -> None:
    # One example per batch: a weight normalised within the batch would cancel out, and
    # both orders of the weights would train alike.
    config = TrainingConfig(sft_steps=8, dpo_steps=0, batch_size=1, learning_rate=1e-2, seed=3)
    texts = [w.completion for w in WINNERS]
    drops = []
    for heavy in (0, 1):
        model, tokenizer = build_tiny_model()
        before = completion_logprobs(model, tokenizer, [PROMPT] * 2, texts, per_token=True)
        examples = [
            SFTExample(prompt=PROMPT, completion=text, weight=4.0 if i == heavy else 0.25)
            for i, text in enumerate(texts)
        ]
        trained, _ = fine_tune(model, tokenizer, sft_examples=examples, config=config)
        after = completion_logprobs(trained, tokenizer, [PROMPT] * 2, texts, per_token=True)
        drops.append([a - b for a, b in zip(after, before, strict=True)])
    # Each text gains more log-likelihood in the run where it carries the large weight.
    assert drops[0][0] > drops[1][0] + 0.1
    assert drops[1][1] > drops[0][1] + 0.1


def test_max_epochs_caps_the_steps_on_little_data() -> None:
    model, tokenizer = build_tiny_model()
    config = TrainingConfig(sft_steps=10, dpo_steps=10, batch_size=2, max_epochs=2, seed=1)
    _, metrics = fine_tune(model, tokenizer, sft_examples=WINNERS[:1], pairs=PAIRS, config=config)
    # One winner: two passes are two steps; two pairs in batches of two: two steps.
    assert (metrics["sft_steps"], metrics["dpo_steps"]) == (2, 2)
    with pytest.raises(TrainingError, match="max_epochs"):
        TrainingConfig(max_epochs=0)


def test_progress_hears_every_step_with_its_loss() -> None:
    model, tokenizer = build_tiny_model()
    config = TrainingConfig(sft_steps=10, dpo_steps=10, batch_size=2, max_epochs=2, seed=1)
    events: list[dict] = []
    _, metrics = fine_tune(
        model, tokenizer, sft_examples=WINNERS[:1], pairs=PAIRS, config=config,
        progress=events.append,
    )  # fmt: skip
    assert [(e["phase"], e["step"], e["steps"]) for e in events] == [
        ("sft", 1, 2), ("sft", 2, 2), ("dpo", 1, 2), ("dpo", 2, 2)
    ]  # fmt: skip
    assert events[1]["loss"] == metrics["sft_train_loss_last"]
    assert events[3]["loss"] == metrics["dpo_train_loss_last"]


def test_dpo_raises_winner_margin_on_training_pairs() -> None:
    model, tokenizer = build_tiny_model()
    margins_before = preference_margins(model, tokenizer, PAIRS)
    config = TrainingConfig(
        sft_steps=0, dpo_steps=15, batch_size=2, learning_rate=1e-2, dpo_beta=0.5, seed=2
    )
    trained, metrics = fine_tune(model, tokenizer, pairs=PAIRS, config=config)
    margins_after = preference_margins(trained, tokenizer, PAIRS)

    for before, after in zip(margins_before, margins_after, strict=True):
        assert after > before + 1.0
    assert metrics["pair_accuracy_before"] == 0.0
    assert metrics["pair_accuracy_after"] == 1.0
    assert metrics["dpo_train_loss_last"] < metrics["dpo_train_loss_first"]


def test_a_shared_prompt_gives_the_same_log_probs_and_gradients_as_whole_rows() -> None:
    model, tokenizer = build_tiny_model()
    pad = pad_id(tokenizer)
    other_prompt = "Shop the new collection"
    rows = [
        encode(tokenizer, PROMPT, "Rings made to measure, order today", 128),
        encode(tokenizer, other_prompt, "Fine jewellery", 128),
        encode(tokenizer, PROMPT, "Shop", 128),
        encode(tokenizer, PROMPT, "Save 20% on diamond necklaces now", 128),
    ]
    results = []
    for shared in (False, True):
        model.zero_grad(set_to_none=True)
        if shared:
            total, count = shared_prompt_logprobs(model, rows, pad, torch.device("cpu"))
        else:
            total, count = sequence_logprobs(model, collate(rows, pad, torch.device("cpu")))
        (total * torch.tensor([1.0, -2.0, 0.5, 3.0])).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((total.detach(), count, grads))
    (whole, whole_count, whole_grads), (shared, shared_count, shared_grads) = results
    assert torch.equal(whole_count, shared_count)
    assert torch.allclose(whole, shared, atol=1e-4)
    assert whole_grads.keys() == shared_grads.keys()
    for name, grad in whole_grads.items():
        assert torch.allclose(grad, shared_grads[name], atol=1e-4, rtol=1e-3), name


def test_same_seed_same_result() -> None:
    config = TrainingConfig(sft_steps=3, dpo_steps=3, batch_size=1, learning_rate=1e-3, seed=5)
    results = []
    for _ in range(2):
        model, tokenizer = build_tiny_model()
        trained, _ = fine_tune(model, tokenizer, sft_examples=WINNERS, pairs=PAIRS, config=config)
        results.append(
            completion_logprobs(trained, tokenizer, [PROMPT], ["Shop the new collection"])
        )
    assert results[0] == pytest.approx(results[1], abs=1e-5)


def test_train_version_writes_a_loadable_versioned_directory(tmp_path: Path) -> None:
    base = save_tiny_model(tmp_path / "base")
    out = tmp_path / "models" / "v0002"
    config = TrainingConfig(sft_steps=4, dpo_steps=4, batch_size=2, learning_rate=3e-3)
    result = train_version(
        base, out, sft_examples=WINNERS, pairs=PAIRS, config=config, version="v0002", parent="v0001"
    )

    assert result.model_dir == out
    record = json.loads((out / TRAINING_RECORD).read_text())
    assert record["version"] == "v0002" and record["parent"] == "v0001"
    assert record["data_hash"] == dataset_hash(WINNERS, PAIRS) == result.data_hash
    assert record["steps"] == {"sft": 4, "dpo": 4}
    assert record["config"]["lora"] is True
    assert record["metrics"]["sft_loss_after"] < record["metrics"]["sft_loss_before"]
    # A self-contained model directory: loads with plain transformers, no peft needed.
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert sft_loss(reloaded, tokenizer, WINNERS) == pytest.approx(
        record["metrics"]["sft_loss_after"], abs=1e-3
    )
    # No half-written sibling directories are left behind.
    assert sorted(p.name for p in out.parent.iterdir()) == ["v0002"]
    with pytest.raises(TrainingError, match="already exists"):
        train_version(base, out, sft_examples=WINNERS, config=config)


def test_dataset_hash_is_order_independent_and_content_sensitive() -> None:
    assert dataset_hash(WINNERS, PAIRS) == dataset_hash(WINNERS[::-1], PAIRS[::-1])
    changed = [SFTExample(prompt=PROMPT, completion="Rings made to measure", weight=2.0)]
    assert dataset_hash(changed, PAIRS) != dataset_hash(WINNERS, PAIRS)


def test_bad_inputs_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="learning_rate"):
        TrainingConfig(learning_rate=-1.0)
    with pytest.raises(TrainingError, match="sft_steps"):
        TrainingConfig(sft_steps=-2)
    with pytest.raises(TrainingError, match="weight"):
        SFTExample(prompt=PROMPT, completion="x", weight=0.0)
    with pytest.raises(TrainingError, match="same text"):
        PreferencePair(prompt=PROMPT, chosen="a", rejected="a")
    model, tokenizer = build_tiny_model()
    with pytest.raises(TrainingError, match="nothing to train"):
        fine_tune(model, tokenizer, config=TrainingConfig())
    with pytest.raises(TrainingError, match="not a model directory"):
        train_version(tmp_path, tmp_path / "out", sft_examples=WINNERS)
