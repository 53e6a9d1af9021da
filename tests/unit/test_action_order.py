"""The tick proposes protection before puts: ``Evaluation.actions()`` lists every top-up (guard
or layer rule) ahead of every option, and the proposer works through that list in order, so the
protective proposal is published before the put ladder is planned and simulated (bench row 5
measures the time to it)."""

from __future__ import annotations

from pathlib import Path

from test_chain_keys import ETH, SAFE, SID, decision, market, parts

from agent.pipeline.evaluate import Evaluation
from agent.policy import OptionAction, TopUpAction


def test_protection_comes_before_every_put(tmp_path: Path) -> None:
    p = parts(tmp_path, ETH)
    d = decision(p, {"eth": market("eth", {SAFE: (100_000, 80_000)})}, [])
    actions = Evaluation(d, SID).actions()
    kinds = [type(a) for a in actions]
    assert TopUpAction in kinds and OptionAction in kinds, kinds
    first_option = kinds.index(OptionAction)
    assert all(k is TopUpAction for k in kinds[:first_option])
    assert all(k is OptionAction for k in kinds[first_option:])
