"""The deterministic answers of the simulated model."""

from __future__ import annotations

import pytest

from proxy.intercept.tokens import canonical_json, estimate_tokens
from proxy.sim.engine.text import VOCABULARY, answer_for, chat_answer_key, count_words

USER = [{"role": "user", "content": "Tell me a story about a lighthouse."}]


def test_answers_are_deterministic_and_positional() -> None:
    key = canonical_json(USER)
    answer = answer_for(key, seed=1, length_range=(5, 9))
    assert answer == answer_for(key, seed=1, length_range=(5, 9))
    assert 5 <= answer.natural_length <= 9
    assert answer.text(0, 6) == answer.text(0, 2) + answer.text(2, 6)
    assert all(answer.token(i) in VOCABULARY for i in range(50))
    assert estimate_tokens(answer.text(0, 50)) == count_words(answer.text(0, 50)) == 50
    assert answer_for(key, seed=2, length_range=(5, 9)).text(0, 8) != answer.text(0, 8)
    lengths = {answer_for(str(i).encode()).natural_length for i in range(200)}
    assert min(lengths) >= 32
    assert max(lengths) <= 512
    assert len(lengths) > 100
    with pytest.raises(ValueError, match="length_range"):
        answer_for(key, length_range=(0, 3))


def test_words_and_draws_are_fixed_by_the_answer() -> None:
    answer = answer_for(canonical_json(USER))
    assert answer.word(3) == answer.token(3).strip()
    assert " " + answer.word(3) in VOCABULARY
    assert answer.draw(7) == answer_for(canonical_json(USER)).draw(7)
    assert len({answer.draw(salt) for salt in range(20)}) == 20
    assert answer.draw(7) != answer_for(canonical_json(USER), seed=1).draw(7)


def test_continued_message_keys_on_the_messages_before_it() -> None:
    partial = [*USER, {"role": "assistant", "content": " abc def"}]
    assert chat_answer_key(partial, continue_final_message=True) == (canonical_json(USER), 2)
    assert chat_answer_key(partial, continue_final_message=False) == (canonical_json(partial), 0)
    reordered = [{"content": USER[0]["content"], "role": "user"}]
    assert chat_answer_key(reordered, continue_final_message=False)[0] == canonical_json(USER)
