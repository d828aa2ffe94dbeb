"""A tiny randomly initialised Llama and a byte-level BPE tokenizer, built in a test.

Tests that need a real transformers model (generation, fine-tuning, retraining) use this one:
two layers, 32 hidden units, a vocabulary trained on a few lines, so it builds and runs in
well under a second on one CPU thread and never touches the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def build_tiny_llama(
    corpus: Sequence[str],
    *,
    special_tokens: Sequence[str],
    bos: str,
    eos: str,
    pad: str,
    unk: str | None = None,
    vocab_size: int,
    seed: int = 0,
    **config: Any,
):
    """A 2-layer Llama and a byte-level BPE tokenizer trained on ``corpus`` (random weights).

    ``config`` adds or overrides :class:`transformers.LlamaConfig` settings
    (e.g. ``max_position_embeddings``). Returns ``(model, tokenizer)``, the model in eval mode.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    names = {"bos_token": bos, "eos_token": eos, "pad_token": pad}
    if unk is not None:
        names["unk_token"] = unk
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **names)
    settings = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**(settings | config)))
    model.eval()
    return model, tokenizer
