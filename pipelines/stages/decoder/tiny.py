"""The embedded default decoder base: a byte-level BPE tokenizer and a small Llama, from scratch.

Used when `GeneratorConfig.base_model` is null: the tokenizer is trained on the stage's corpus
with the `tokenizers` library, the model is sized by `tiny_layers` / `tiny_hidden` /
`tiny_heads` (decoder-only, so GPTQ applies to it later).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipelines.config import GeneratorConfig

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
# Prompt field markers: atomic tokens in the embedded tokenizer, plain text for any other base.
MARKERS = ("<|context|>", "<|topic|>", "<|message|>", "<|reply|>", "<|draft|>", "<|rewrite|>")


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """Return a byte-level BPE `PreTrainedTokenizerFast` trained on `texts` (left padding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, UNK, *MARKERS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
    )


def build_tiny_model(cfg: GeneratorConfig, tokenizer: Any) -> Any:
    """Return a freshly initialised small Llama-style causal LM sized by the `tiny_*` fields."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if cfg.tiny_hidden % cfg.tiny_heads:
        raise ValueError(
            f"params.yaml: tiny_hidden ({cfg.tiny_hidden}) must be divisible by tiny_heads "
            f"({cfg.tiny_heads}); change one of them"
        )
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.tiny_hidden,
        intermediate_size=cfg.tiny_hidden * 4,
        num_hidden_layers=cfg.tiny_layers,
        num_attention_heads=cfg.tiny_heads,
        num_key_value_heads=cfg.tiny_heads,
        max_position_embeddings=cfg.max_length + cfg.max_new_tokens,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)
