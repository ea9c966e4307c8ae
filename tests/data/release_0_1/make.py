"""Writes the checkpoints of release 0.1.0 that tests/train/test_legacy_checkpoints.py must keep loading.

Run once with release 0.1.0 installed (``python tests/data/release_0_1/make.py``); it writes
``hf.ckpt`` and ``sgd.ckpt`` (a run stopped after 2 of 4 updates) and ``expected.npz`` (the
parameters after all 4 updates of an uninterrupted run with the same settings). Only the
public API is used, so the script documents exactly what the files hold.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def rnn_problem():
    from hf_symbolic import SequenceDataset, hf_optimizer
    import pytensor
    import pytensor.tensor as pt

    rng = np.random.default_rng(7)
    T, H, N = 6, 4, 40
    W_in = pytensor.shared(rng.normal(size=(1, H)) * 0.5, name="W_in")
    W_hh = pytensor.shared(rng.normal(size=(H, H)) * 0.4, name="W_hh")
    b_h = pytensor.shared(np.zeros(H), name="b_h")
    W_out = pytensor.shared(rng.normal(size=(H, 1)) * 0.5, name="W_out")
    b_out = pytensor.shared(np.zeros(1), name="b_out")
    x = pt.tensor3("x")  # (T, batch, 1)
    y = pt.matrix("y")   # (batch, 1)

    def step(x_t, a_prev):
        return pt.dot(x_t, W_in) + pt.dot(pt.tanh(a_prev), W_hh) + b_h

    a0 = pt.zeros((x.shape[1], H))
    ha = pytensor.scan(step, sequences=[x], outputs_info=[a0], return_updates=False)
    h = pt.tanh(ha)
    s = pt.dot(h[-1], W_out) + b_out
    cost = pt.mean(y * pt.softplus(-s) + (1 - y) * pt.softplus(s))
    err = pt.mean(pt.neq(pt.gt(s, 0), y))
    X = rng.integers(0, 2, size=(T, N, 1)).astype(float)
    Y = X[0].copy()
    opt = hf_optimizer([W_in, W_hh, b_h, W_out, b_out], [x, y], s, [cost, err])
    data = [[X[:, i * 10:(i + 1) * 10] for i in range(4)], [Y[i * 10:(i + 1) * 10] for i in range(4)]]
    gd = SequenceDataset(data, batch_size=None, number_batches=2, seed=3)
    cd = SequenceDataset(data, batch_size=None, number_batches=1, seed=4)
    kw = dict(initial_lambda=0.5, preconditioner=True, max_cg_iterations=20, validation=gd)
    return opt, gd, cd, kw


def mlp_problem():
    from hf_symbolic import BatchDataset
    from hf_symbolic.sgd import sgd_optimizer
    import pytensor
    import pytensor.tensor as pt

    rng = np.random.default_rng(11)
    W1 = pytensor.shared(rng.normal(size=(3, 5)) * 0.5, name="W1")
    b1 = pytensor.shared(np.zeros(5), name="b1")
    W2 = pytensor.shared(rng.normal(size=(5, 1)) * 0.5, name="W2")
    x, y = pt.matrix("x"), pt.matrix("y")
    s = pt.dot(pt.tanh(pt.dot(x, W1) + b1), W2)
    cost = pt.mean((s - y) ** 2)
    X = rng.normal(size=(64, 3))
    Y = np.sin(X[:, :1]) + X[:, 1:2] * X[:, 2:3]
    opt = sgd_optimizer([W1, b1, W2], [x, y], s, [cost])
    gd = BatchDataset([X, Y], batch_size=16, seed=5)
    kw = dict(learning_rate=0.05, momentum=0.9, validation=gd)
    return opt, gd, kw


def main():
    sys.path.insert(0, os.getcwd())
    expected = {}
    for name in ("hf", "sgd"):
        path = os.path.join(HERE, f"{name}.ckpt")
        if os.path.exists(path):
            os.remove(path)
        if name == "hf":
            opt, gd, cd, kw = rnn_problem()
            theta0 = opt.get_flat()
            opt.train(gd, cd, num_updates=2, save_progress=path, **kw)
            opt2, gd2, cd2, _ = rnn_problem()
            opt2.set_flat(theta0)
            opt2.train(gd2, cd2, num_updates=4, **kw)
            expected["hf"] = opt2.get_flat()
        else:
            opt, gd, kw = mlp_problem()
            opt.train(gd, num_updates=2, save_progress=path, **kw)
            opt2, gd2, _ = mlp_problem()
            opt2.train(gd2, num_updates=4, **kw)
            expected["sgd"] = opt2.get_flat()
    np.savez(os.path.join(HERE, "expected.npz"), **expected)


if __name__ == "__main__":
    main()
