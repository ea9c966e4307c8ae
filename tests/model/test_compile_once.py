"""Functions are compiled once: no recompilation after the first update."""

import numpy as np
import pytensor

from hf_symbolic import BatchDataset, hf_optimizer
from models import rnn


def test_no_compilation_after_first_update(monkeypatch):
    m = rnn(structural=True, n=8, T=6)
    opt = hf_optimizer(m.p, m.inputs, m.s, m.costs, m.h, m.ha)
    X, Y = m.batch
    grad_ds = BatchDataset([X, Y], 8, case_axis=[1, 0], seed=0)
    cg_ds = BatchDataset([X, Y], 4, case_axis=[1, 0], seed=1)
    valid = BatchDataset([X, Y], 8, case_axis=[1, 0], shuffle=False)

    calls = []
    real = pytensor.function

    def counting(*args, **kwargs):
        calls.append(kwargs.get("name"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pytensor, "function", counting)
    seen_after_first = []

    def callback(stats):
        if stats.update == 1:
            calls.clear()
        else:
            seen_after_first.extend(calls)

    opt.train(grad_ds, cg_ds, num_updates=4, validation=valid, callback=callback)
    assert opt.result.updates == 4
    assert len(opt.result.history) == 4
    assert seen_after_first == [], f"recompiled after the first update: {seen_after_first}"
    # and the first update did compile what it needed (the counter works)
    opt2 = hf_optimizer(m.p, m.inputs, m.s, m.costs, m.h, m.ha)
    calls.clear()
    opt2.gradient(m.batch)
    assert calls == ["hf_gradient"]
    assert np.isfinite(opt.result.history[-1].new_cost)
