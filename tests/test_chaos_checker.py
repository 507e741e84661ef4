"""The chaos checker (``tests.chaos.History``) catches each broken rule it is there for.

Each test feeds it a history that breaks one rule - two blocks at one height, a node
forgetting committed heights, two answers for one tx, a told tx missing or moved - and
checks that it is named; a history that breaks none must give no violation at all.
"""

from __future__ import annotations

from tests.chaos import History

A, B, C = "aa" * 32, "bb" * 32, "cc" * 32
T1, T2 = "01" * 32, "02" * 32


def _clean() -> History:
    h = History()
    for node in ("node-1", "node-2"):
        h.height(node, 1)
        h.block(node, 1, A)
        h.height(node, 2)
        h.block(node, 2, B)
    h.told(T1, 2, B, "node-1")
    h.told(T1, 2, B, "node-2")
    return h


def test_a_history_that_breaks_no_rule_has_no_violation() -> None:
    h = _clean()
    h.final({"node-1": [(A, []), (B, [T1])], "node-2": [(A, []), (B, [T1, T2])]})
    assert h.violations == []


def test_two_blocks_at_one_height_is_divergence() -> None:
    h = _clean()
    h.block("node-3", 2, C)
    assert len(h.violations) == 1 and "divergence at height 2" in h.violations[0]
    assert "node-1" in h.violations[0] and "node-3" in h.violations[0]


def test_divergence_in_the_final_chains_is_caught_too() -> None:
    h = _clean()
    h.final({"node-1": [(A, []), (B, [T1])], "node-2": [(A, []), (C, [T1])]})
    assert any("divergence at height 2" in v for v in h.violations), h.violations


def test_a_node_reporting_a_lower_height_lost_committed_blocks() -> None:
    h = _clean()
    h.height("node-2", 1)
    assert h.violations == ["node-2 lost committed blocks: it reported height 2, then 1"]


def test_two_answers_for_one_tx_contradict() -> None:
    h = _clean()
    h.told(T1, 3, C, "node-2")
    assert len(h.violations) == 1 and h.violations[0].startswith(f"tx {T1[:16]}")


def test_a_told_tx_missing_from_a_node_is_lost() -> None:
    h = _clean()
    h.final({"node-1": [(A, []), (B, [T1])], "node-2": [(A, []), (B, [])]})
    assert len(h.violations) == 1 and "lost tx" in h.violations[0]
    assert "node-2" in h.violations[0]


def test_a_node_short_of_a_told_height_is_a_lost_tx() -> None:
    h = _clean()
    h.final({"node-1": [(A, []), (B, [T1])], "node-2": [(A, [])]})
    assert any("lost tx" in v and "node-2 ends at 1" in v for v in h.violations), h.violations
