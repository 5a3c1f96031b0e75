"""A tiny random Llama and its tokenizer, made locally (no hub: these machines cannot reach it).

The model only has to run through vLLM's real code paths; its text is noise. Shapes are the
smallest the CPU attention kernel accepts (head_dim 32; it refuses 16). About 1 MB on disk.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

VOCAB = 512
MAX_POSITIONS = 4096

# A jinja chat template, so /v1/chat/completions works: role-tagged lines, then the prompt for
# the assistant's turn when the server asks for it.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_WORDS = (
    *("agent", "program", "call", "queue", "level", "service", "token", "engine", "proxy"),
    *("tool", "plan", "search", "answer", "the", "a", "of", "to", "and", "in", "is", "it"),
    *("that", "for", "on", "with", "as", "was", "at", "by", "be", "this", "from", "or"),
)


def _corpus(lines: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 20))) for _ in range(lines)]


def _save_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(2000, seed=1), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = MAX_POSITIONS
    fast.save_pretrained(str(out))


def _save_model(out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        dtype="bfloat16",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True)
    # A generation config without sampling defaults, so requests' own params are used as sent.
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2}), encoding="utf-8"
    )


def make_tiny_llama(out: Path) -> Path:
    """Write the model and tokenizer into ``out`` (created if missing); return ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    _save_tokenizer(out)
    _save_model(out)
    return out


if __name__ == "__main__":  # pragma: no cover - a manual helper
    import sys

    print(make_tiny_llama(Path(sys.argv[1])))
