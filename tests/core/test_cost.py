"""The one service unit: estimated engine seconds."""

from __future__ import annotations

from proxy.core.cost import ServiceCost
from proxy.table import TableConfig


def test_service_charges_the_prompt_once_the_first_token_is_out() -> None:
    cost = ServiceCost(decode_token_s=1.0, prefill_token_s=0.01)
    assert cost.of(prompt_tokens=100, output_tokens=0) == 0
    assert cost.of(prompt_tokens=100, output_tokens=2) == 3
    # A call that finished without output still had its prompt prefilled.
    assert cost.of(prompt_tokens=100, output_tokens=0, done=True) == 1


def test_the_table_charges_in_the_same_unit() -> None:
    config = TableConfig(decode_token_s=0.02, prefill_token_s=0.001)
    assert config.cost == ServiceCost(decode_token_s=0.02, prefill_token_s=0.001)
