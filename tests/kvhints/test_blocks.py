"""Prompt block hashes: shared text, shared hashes, as far as it is shared."""

from __future__ import annotations

from proxy.kvhints.blocks import prompt_blocks, prompt_text, text_blocks


def test_full_blocks_only_and_chained() -> None:
    a = text_blocks("x" * 64 * 3 + "tail", 16)
    b = text_blocks("x" * 64 * 2 + "y" * 64, 16)
    assert len(a) == 3
    assert a[:2] == b[:2]
    assert a[2] != b[2]
    # Chained: the same block after a different prefix hashes differently.
    assert text_blocks("y" * 64 + "x" * 64, 16)[1] != a[1]


def test_a_conversation_that_grows_keeps_its_blocks() -> None:
    system = {"role": "system", "content": "s" * 300}
    first = {"messages": [system, {"role": "user", "content": "q" * 200}]}
    later = {"messages": [*first["messages"], {"role": "assistant", "content": "a" * 500}]}
    one, two = (
        prompt_blocks(first, chat=True, block_tokens=16),
        prompt_blocks(later, chat=True, block_tokens=16),
    )
    assert len(two) > len(one)
    assert two[: len(one)] == one


def test_completion_prompts() -> None:
    assert prompt_text({"prompt": "abc"}, chat=False) == "abc"
    assert prompt_text({"prompt": ["abc", "def"]}, chat=False) == "abc"
    assert prompt_text({"prompt": [1, 2]}, chat=False) == "1 2"
    assert prompt_text({}, chat=False) == ""
