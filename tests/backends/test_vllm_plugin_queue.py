"""The vLLM plug-in's pure half, without vLLM: its service unit, the call book, the
policy-ordered queue and the preemption rule (its edges: ``test_vllm_plugin_control.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from proxy.backends.vllm_plugin.queue import (
    IDLE_PROGRAMS,
    CallBook,
    CallTags,
    PolicyQueue,
    SortKey,
)
from proxy.backends.vllm_plugin.victims import choose_victims
from proxy.core.cost import ServiceCost
from proxy.policies.atlas import ATLAS, ATLASConfig
from proxy.policies.base import Policy
from proxy.policies.levels import Levels, LevelsConfig
from proxy.policies.plas import PLAS, PLASConfig
from proxy.records import CallState

# Boundaries 1, 2, 4, 8 (levels 0..4); one decode token = 0.25 s, prompts free: a call is
# demoted after 4 tokens, then 8, then 16 more.
LEVELS = LevelsConfig(levels=5, first=1.0, growth=2.0, beta=None)
COST = ServiceCost(decode_token_s=0.25, prefill_token_s=0.0)


def plas_book() -> CallBook:
    policy = PLAS(PLASConfig(levels=5, first=1.0, growth=2.0, beta=None))
    return CallBook(policy=policy, levels=Levels.from_config(LEVELS), cost=COST)


def arrive(
    book: CallBook,
    request_id: str,
    *,
    program: str = "",
    service: float = 0.0,
    level: int | None = None,
    now: float = 0.0,
) -> None:
    tags = CallTags(
        program=program or "p-" + request_id, call="c-" + request_id, service=service, level=level
    )
    book.arrive(request_id=request_id, tags=tags, prompt_tokens=10, arrival=now, now=now)


def level(book: CallBook, request_id: str) -> int:
    tracked = book.get(request_id)
    assert tracked is not None
    return tracked.rank.level


# -- service unit ---------------------------------------------------------------------------


def test_service_charges_the_prompt_once_its_prefill_is_done() -> None:
    cost = ServiceCost(decode_token_s=0.01, prefill_token_s=0.001)
    assert cost.of(prompt_tokens=100, output_tokens=0) == 0.0
    assert cost.of(prompt_tokens=100, output_tokens=1) == pytest.approx(0.11)
    assert cost.of(prompt_tokens=100, output_tokens=10) == pytest.approx(0.2)


def test_service_defaults_follow_the_process_table() -> None:
    from proxy.table import TableConfig

    table = TableConfig()
    assert ServiceCost().decode_token_s == table.decode_token_s
    assert ServiceCost().prefill_token_s == table.prefill_token_s


# -- the call book ---------------------------------------------------------------------------


def test_a_call_enters_the_level_of_its_programs_service() -> None:
    book = plas_book()
    arrive(book, "new", service=0.0)
    arrive(book, "old", service=5.0)  # [4, 8) is level 3
    assert level(book, "new") == 0
    assert level(book, "old") == 3


def test_a_call_is_demoted_as_it_is_served() -> None:
    book = plas_book()
    arrive(book, "r")
    seen = []
    for tokens in (1, 3, 4, 7, 8, 15, 16, 40):
        book.refresh("r", prompt_tokens=10, output_tokens=tokens, now=1.0)
        seen.append(level(book, "r"))
    assert seen == [0, 0, 1, 1, 2, 2, 3, 4]
    tracked = book.get("r")
    assert tracked is not None
    assert tracked.call.service == pytest.approx(10.0)
    assert tracked.call.level == 4


def test_an_explicit_level_holds_for_that_levels_quantum() -> None:
    book = plas_book()
    arrive(book, "r", service=5.0, level=1)  # the proxy says 1 although its service says 3
    assert level(book, "r") == 1
    book.refresh("r", prompt_tokens=10, output_tokens=3, now=1.0)  # 0.75 < quantum(1) = 1
    assert level(book, "r") == 1
    book.refresh("r", prompt_tokens=10, output_tokens=4, now=1.0)  # 1.0: level 1 used up
    assert level(book, "r") == 2
    book.refresh("r", prompt_tokens=10, output_tokens=500, now=1.0)
    assert level(book, "r") == 4  # the bottom holds everything


def test_ranks_order_by_level_then_arrival() -> None:
    book = plas_book()
    arrive(book, "late-top", service=0.0, now=3.0)
    arrive(book, "early-low", service=3.0, now=1.0)
    arrive(book, "early-top", service=0.0, now=2.0)
    keys = {r: book.sort_key(r) for r in ("late-top", "early-low", "early-top")}
    assert sorted(keys, key=lambda r: keys[r]) == ["early-top", "late-top", "early-low"]
    assert book.sort_key("unknown") is None


def test_program_service_update_reranks_all_its_calls_and_drops_pins() -> None:
    book = plas_book()
    arrive(book, "a", program="p", service=0.0)
    arrive(book, "b", program="p", service=0.0, level=0)
    arrive(book, "x", program="q", service=0.0)
    touched = book.set_program_service("p", 5.0, now=0.0)
    assert touched == ["a", "b"]
    for request_id in ("a", "b"):
        book.refresh(request_id, prompt_tokens=10, output_tokens=0, now=1.0)
    assert (level(book, "a"), level(book, "b"), level(book, "x")) == (3, 3, 0)
    assert book.set_program_service("nobody", 1.0, now=0.0) == []


def test_call_level_update_pins_the_call() -> None:
    book = plas_book()
    arrive(book, "r", service=8.0)
    assert level(book, "r") == 4
    assert book.set_call_level("c-r", 0, now=0.0) == ["r"]
    assert level(book, "r") == 0
    assert book.set_call_level("c-r", 99, now=0.0) == ["r"]  # clamped to the bottom
    assert level(book, "r") == 4
    assert book.set_call_level("no-such-call", 0, now=0.0) == []


def test_admission_preemption_and_quantum_accounting() -> None:
    book = plas_book()
    arrive(book, "r", now=0.0)
    assert book.served_since_admission("r", 0) is None
    book.admitted("r", output_tokens=0, now=2.0)
    tracked = book.get("r")
    assert tracked is not None
    assert tracked.call.wait == 2.0
    assert tracked.call.state is CallState.RUNNING
    assert book.served_since_admission("r", 5) == 5
    book.preempted("r", now=3.0)
    assert tracked.call.state is CallState.PREEMPTED
    assert book.served_since_admission("r", 5) is None
    book.admitted("r", output_tokens=5, now=4.5)
    assert tracked.call.wait == 3.5
    assert book.served_since_admission("r", 6) == 1


def test_finish_folds_service_into_the_program_and_remembers_it_idle() -> None:
    book = plas_book()
    arrive(book, "r", program="p", service=1.0)
    book.admitted("r", output_tokens=0, now=0.0)
    book.refresh("r", prompt_tokens=10, output_tokens=8, now=1.0)
    done = book.finish("r", now=1.0, ok=True)
    assert done is not None
    assert done.call.state is CallState.DONE
    assert done.program.service == pytest.approx(3.0)  # 1.0 + 8 x 0.25
    assert not done.program.active
    assert len(book) == 0
    assert book.programs() == 0
    assert book.finish("r", now=1.0, ok=True) is None
    # The idle program comes back with its creation time; the new call's xargs set its service.
    arrive(book, "r2", program="p", service=3.0, now=5.0)
    again = book.get("r2")
    assert again is not None
    assert again.program is done.program
    assert again.program.created == 0.0


def test_idle_programs_are_bounded() -> None:
    book = plas_book()
    for i in range(IDLE_PROGRAMS + 5):
        arrive(book, f"r{i}", program=f"p{i}")
        book.finish(f"r{i}", now=0.0, ok=False)
    assert len(book._idle) == IDLE_PROGRAMS
    assert "p0" not in book._idle


def test_atlas_keeps_a_programs_parallel_calls_together() -> None:
    policy: Policy = ATLAS(ATLASConfig(levels=5, first=1.0, growth=2.0, beta=None))
    book = CallBook(policy=policy, levels=Levels.from_config(LEVELS), cost=COST)
    arrive(book, "p-1", program="p", now=0.0)
    arrive(book, "q-1", program="q", now=1.0)
    arrive(book, "p-2", program="p", now=2.0)
    keys = {r: book.sort_key(r) for r in ("p-1", "q-1", "p-2")}
    assert sorted(keys, key=lambda r: keys[r]) == ["p-1", "p-2", "q-1"]
    # The longest thread's progress sinks its siblings too.
    book.refresh("p-1", prompt_tokens=10, output_tokens=8, now=3.0)
    book.refresh("p-2", prompt_tokens=10, output_tokens=0, now=3.0)
    assert (level(book, "p-1"), level(book, "p-2"), level(book, "q-1")) == (2, 2, 0)


def test_a_new_figure_from_the_proxy_reranks_the_programs_waiting_calls() -> None:
    policy: Policy = ATLAS(ATLASConfig(levels=5, first=1.0, growth=2.0, beta=None))
    book = CallBook(policy=policy, levels=Levels.from_config(LEVELS), cost=COST)
    queue: PolicyQueue[Req] = PolicyQueue(book)
    arrive(book, "p-1", program="p", now=0.0)
    queue.add_request(Req("p-1"))
    assert level(book, "p-1") == 0
    # The program's next call brings the proxy's newer critical path: its waiting sibling
    # ranks from it too, without waiting for a step to refresh it.
    arrive(book, "p-2", program="p", service=3.0, now=1.0)
    assert level(book, "p-1") == 2


# -- the queue ------------------------------------------------------------------------------


@dataclass(eq=False)
class Req:
    request_id: str
    priority: int = 0


def keyed(*items: tuple[str, int]) -> tuple[PolicyQueue[Req], dict[str, Req], CallBook]:
    """A queue over a book whose calls enter the given levels (pinned by the proxy)."""
    book = plas_book()
    queue: PolicyQueue[Req] = PolicyQueue(book)
    reqs = {}
    for name, lvl in items:
        arrive(book, name, program=name, level=lvl)
        reqs[name] = Req(name)
        queue.add_request(reqs[name])
    return queue, reqs, book


def names(queue: PolicyQueue[Req]) -> list[str]:
    return [r.request_id for r in queue]


def test_queue_orders_by_key_not_arrival() -> None:
    queue, reqs, _ = keyed(("a", 3), ("b", 1), ("c", 2), ("d", 1))
    assert names(queue) == ["b", "d", "c", "a"]
    assert queue.peek_request() is reqs["b"]
    assert len(queue) == 4
    assert queue
    assert queue.pop_request() is reqs["b"]
    assert reqs["b"].priority == 1  # vLLM's KV-pressure victim choice reads the level
    queue.prepend_request(reqs["b"])  # back by rank, as in vLLM's priority queue
    assert names(queue) == ["b", "d", "c", "a"]


def test_queue_reranks_a_waiting_call_when_the_proxy_pins_it() -> None:
    queue, _, book = keyed(("a", 3), ("b", 1))
    assert names(queue) == ["b", "a"]
    book.set_call_level(book.get("a").call.id, 0, now=1.0)  # type: ignore[union-attr]
    assert names(queue) == ["a", "b"]  # no resort needed: the core re-ranked it


def test_queue_puts_requests_the_book_does_not_know_last() -> None:
    queue, reqs, _ = keyed(("a", 3))
    stranger = Req("stranger")
    queue.add_request(stranger)
    assert names(queue) == ["a", "stranger"]
    queue.remove_request(reqs["a"])
    assert queue.pop_request() is stranger
    assert not queue


def test_queue_removal_and_empty_errors() -> None:
    queue, reqs, _ = keyed(("a", 1), ("b", 2), ("c", 3))
    queue.remove_request(reqs["b"])
    assert names(queue) == ["a", "c"]
    with pytest.raises(ValueError, match="not queued"):
        queue.remove_request(reqs["b"])
    queue.remove_requests([reqs["a"], reqs["c"]])
    assert not queue
    with pytest.raises(IndexError):
        queue.pop_request()
    with pytest.raises(IndexError):
        queue.peek_request()
    queue.prepend_requests([reqs["c"], reqs["a"]])
    assert names(queue) == ["a", "c"]


def test_queue_bulk_removal_skips_requests_queued_elsewhere() -> None:
    # vLLM's finish_requests asks every waiting queue to drop each waiting request it
    # finishes; a paused streaming session waits in vLLM's queue of KV-holding requests.
    queue, reqs, _ = keyed(("a", 1), ("b", 2))
    stranger = Req("stranger")
    queue.add_request(stranger)
    queue.remove_requests([reqs["a"], Req("elsewhere"), stranger])
    assert names(queue) == ["b"]


# -- the preemption rule --------------------------------------------------------------------


def key(lvl: int, seq: int) -> SortKey:
    return (lvl, float(seq), "", seq)


KEYS = {"r1": key(3, 1), "r2": key(5, 2), "r3": key(5, 3), "w0": key(0, 4), "w1": key(1, 5)}


def test_no_preemption_while_a_free_slot_can_take_the_call() -> None:
    victims = choose_victims(
        waiting=["w0"],
        running=["r1", "r2"],
        keys=KEYS,
        free_slots=1,
        passed_over=set(),
        preemptible={"r1", "r2"},
    )
    assert victims == []


def test_full_slots_preempt_the_worst_outranked_call() -> None:
    victims = choose_victims(
        waiting=["w0", "w1"],
        running=["r1", "r2", "r3"],
        keys=KEYS,
        free_slots=0,
        passed_over=set(),
        preemptible={"r1", "r2", "r3"},
    )
    # Worst first: r3 (level 5, later arrival), then r2.
    assert victims == [("r3", "w0"), ("r2", "w1")]


def test_a_call_passed_over_despite_free_slots_may_preempt() -> None:
    victims = choose_victims(
        waiting=["w0"],
        running=["r2"],
        keys=KEYS,
        free_slots=1,
        passed_over={"w0"},
        preemptible={"r2"},
    )
    assert victims == [("r2", "w0")]


def test_same_level_never_preempts() -> None:
    keys = {"r": key(2, 1), "w": key(2, 0)}  # the waiting call even arrived first
    assert (
        choose_victims(
            waiting=["w"],
            running=["r"],
            keys=keys,
            free_slots=0,
            passed_over={"w"},
            preemptible={"r"},
        )
        == []
    )


def test_minimum_quantum_protects_a_fresh_call() -> None:
    victims = choose_victims(
        waiting=["w0", "w1"],
        running=["r1", "r2"],
        keys=KEYS,
        free_slots=0,
        passed_over=set(),
        preemptible={"r1"},  # r2 was just admitted
    )
    # r2 is worse but has not had its quantum yet: r1 goes, and w1 finds nobody to replace.
    assert victims == [("r1", "w0")]
    keys = dict(KEYS, r1=key(1, 1))
    assert (
        choose_victims(
            waiting=["w1"],
            running=["r1"],
            keys=keys,
            free_slots=0,
            passed_over=set(),
            preemptible={"r1"},
        )
        == []
    )
