"""Tests of hf_symbolic.train.data: 2012 SequenceDataset semantics, BatchDataset, RNG and resume."""

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_symbolic.train.checkpoint import load_checkpoint, save_checkpoint
from hf_symbolic.train.data import BatchDataset, SequenceDataset
from hf_symbolic.errors import CheckpointCorruptError, CheckpointMismatchError, DatasetError


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _sequences(lengths, n_features=2):
    """Input 0: rows ``1000*j + t`` (sequence j, step t); input 1: the negated values, one column."""
    xs = [np.repeat((1000.0 * j + np.arange(n))[:, None], n_features, axis=1) for j, n in enumerate(lengths)]
    ys = [-(1000.0 * j + np.arange(n))[:, None] for j, n in enumerate(lengths)]
    return [xs, ys]


def _chunk_id(item):
    """(sequence, first step, number of rows) of a chunk built by ``_sequences``; checks alignment."""
    x, y = item
    np.testing.assert_array_equal(x[:, 0], -y[:, 0])
    first = int(x[0, 0])
    return first // 1000, first % 1000, x.shape[0]


def _snapshot(item):
    return [np.array(a, copy=True) for a in item]


def _run(ds, n_updates):
    out = []
    for _ in range(n_updates):
        out.extend(_snapshot(item) for item in ds.iterate(update=True))
    return out


def _same_items(a, b):
    return len(a) == len(b) and all(
        len(ia) == len(ib) and all(xa.shape == xb.shape and np.array_equal(xa, xb) for xa, xb in zip(ia, ib))
        for ia, ib in zip(a, b)
    )


def _assert_same_items(a, b):
    assert _same_items(a, b)


def _through_serialization(state):
    """Push a state through JSON text and an npz archive, as a checkpoint would."""
    text = json.dumps(state["json"], allow_nan=False)
    buf = io.BytesIO()
    np.savez(buf, **state["arrays"])
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return {"json": json.loads(text), "arrays": arrays}


# ---------------------------------------------------------------------------
# SequenceDataset: item construction
# ---------------------------------------------------------------------------


def test_chunk_positions_hand_computed():
    # lengths 10, 23, 30 with batch_size 10 and minimum_size 3:
    #   seq 0: k <= 7  -> k = 0          -> rows [0:10]
    #   seq 1: k <= 20 -> k = 0, 10, 20  -> [0:10], [10:20], [20:23] (3 rows >= 3)
    #   seq 2: k <= 27 -> k = 0, 10, 20  -> [0:10], [10:20], [20:30]
    ds = SequenceDataset(_sequences([10, 23, 30]), batch_size=10, number_batches=7, minimum_size=3, seed=0)
    assert len(ds) == 7
    got = sorted(_chunk_id(item) for item in ds.iterate(update=False))
    assert got == [(0, 0, 10), (1, 0, 10), (1, 10, 10), (1, 20, 3), (2, 0, 10), (2, 10, 10), (2, 20, 10)]


def test_tail_shorter_than_minimum_size_is_dropped():
    # length 25, batch 10: minimum_size 5 keeps the 5-row tail (k=20 <= 20), 6 drops it (k=20 > 19).
    keep = SequenceDataset(_sequences([25]), 10, 3, minimum_size=5, seed=1)
    drop = SequenceDataset(_sequences([25]), 10, 2, minimum_size=6, seed=1)
    assert sorted(_chunk_id(i) for i in keep.iterate(update=False)) == [(0, 0, 10), (0, 10, 10), (0, 20, 5)]
    assert sorted(_chunk_id(i) for i in drop.iterate(update=False)) == [(0, 0, 10), (0, 10, 10)]
    # minimum_size larger than batch_size: chunks stay batch_size long, fewer start positions.
    big_min = SequenceDataset(_sequences([25]), 4, 5, minimum_size=9, seed=1)
    assert sorted(_chunk_id(i) for i in big_min.iterate(update=False)) == [
        (0, 0, 4), (0, 4, 4), (0, 8, 4), (0, 12, 4), (0, 16, 4)]
    assert len(big_min) == 5  # k <= 16


def test_items_are_views_not_copies():
    data = _sequences([12, 12])
    chunked = SequenceDataset(data, 5, 4, minimum_size=2, seed=0)
    for item in chunked.iterate(update=False):
        seq = _chunk_id(item)[0]
        assert np.shares_memory(item[0], data[0][seq]) and np.shares_memory(item[1], data[1][seq])
    whole = SequenceDataset(data, None, 2, seed=0)
    for item in whole.iterate(update=False):
        seq = _chunk_id(item)[0]
        assert item[0] is data[0][seq] and item[1] is data[1][seq]


def test_batch_size_none_gives_one_item_per_sequence_regardless_of_minimum_size():
    ds = SequenceDataset(_sequences([3, 50, 7]), None, 3, minimum_size=10, seed=4)
    assert len(ds) == 3 and ds.num_sequences == 3
    assert sorted(_chunk_id(i) for i in ds.iterate(update=False)) == [(0, 0, 3), (1, 0, 50), (2, 0, 7)]


# ---------------------------------------------------------------------------
# SequenceDataset: iterate / update / reshuffle
# ---------------------------------------------------------------------------


def _construction_order(lengths, batch_size, minimum_size):
    """Item ids in the order the data define them (sequence by sequence, chunk by chunk)."""
    ids = []
    for j, n in enumerate(lengths):
        if batch_size is None:
            ids.append((j, 0, n))
        else:
            ids.extend((j, k, min(batch_size, n - k)) for k in range(0, n - minimum_size + 1, batch_size))
    return ids


def test_iterate_wraps_and_reshuffles_exactly_at_epoch_end():
    lengths = [10, 23, 30]  # 7 items
    base = _construction_order(lengths, 10, 3)
    ref_rng = np.random.default_rng(42)
    order1 = ref_rng.permutation(7)
    order2 = ref_rng.permutation(7)
    ds = SequenceDataset(_sequences(lengths), 10, 3, minimum_size=3, seed=42)

    def ids(update):
        return [_chunk_id(i) for i in ds.iterate(update=update)]

    assert ds.position == 0
    first = ids(False)
    assert first == [base[k] for k in order1[:3]]
    assert ids(False) == first and ds.position == 0  # update=False revisits the same items
    assert ids(True) == first and ds.position == 3  # 0 + 3 < 7: advance
    assert ids(True) == [base[k] for k in order1[3:6]] and ds.position == 6  # 3 + 3 < 7: advance
    # 6 + 3 >= 7: wraps around within the same order, then the epoch ends.
    assert ids(True) == [base[k] for k in order1[[6, 0, 1]]]
    assert ds.position == 0
    assert ids(False) == [base[k] for k in order2[:3]]


def test_reshuffle_when_position_plus_batches_equals_length():
    lengths = [10] * 6
    base = _construction_order(lengths, 10, 10)
    ref_rng = np.random.default_rng(7)
    orders = [ref_rng.permutation(6) for _ in range(3)]
    ds = SequenceDataset(_sequences(lengths), 10, 3, minimum_size=10, seed=7)
    seen = [[_chunk_id(i) for i in ds.iterate()] for _ in range(5)]
    assert seen == [
        [base[k] for k in orders[0][:3]],
        [base[k] for k in orders[0][3:]],  # 3 + 3 >= 6: reshuffle after this one
        [base[k] for k in orders[1][:3]],
        [base[k] for k in orders[1][3:]],
        [base[k] for k in orders[2][:3]],
    ]
    # update() alone follows the same rule (position is 3 after five calls).
    assert ds.position == 3
    ds.update()
    assert ds.position == 0
    ds.update()
    assert ds.position == 3


def test_number_batches_larger_than_items_repeats_items():
    ds = SequenceDataset(_sequences([10, 10]), None, 5, seed=3)
    ids = [_chunk_id(i)[0] for i in ds.iterate(update=False)]
    assert ids[:2] == ids[2:4] and ids[4] == ids[0] and sorted(ids[:2]) == [0, 1]


def test_seeded_runs_are_deterministic_and_seeds_differ():
    def run(seed):
        ds = SequenceDataset(_sequences([30, 30, 30, 30]), 5, 2, minimum_size=5, seed=seed)
        return [_chunk_id(i) for _ in range(12) for i in ds.iterate()]

    assert run(11) == run(11)
    assert run(11) != run(12)
    assert run(11) == run(np.random.default_rng(11))


def test_global_rng_mode_matches_2012_shuffle_and_is_reproducible():
    lengths = [10, 23, 30, 17]
    base = _construction_order(lengths, 10, 3)
    # The 2012 code shuffled its item list in place with numpy's global RNG.
    np.random.seed(1234)
    expected = list(base)
    np.random.shuffle(expected)
    np.random.seed(1234)
    ds = SequenceDataset(_sequences(lengths), 10, len(base), minimum_size=3)
    assert ds.rng_mode == "global"
    assert [_chunk_id(i) for i in ds.iterate(update=False)] == expected

    def run():
        np.random.seed(99)
        d = SequenceDataset(_sequences(lengths), 10, 3, minimum_size=3)
        return [_chunk_id(i) for _ in range(9) for i in d.iterate()]

    assert run() == run()


# ---------------------------------------------------------------------------
# Resume (state_dict / load_state_dict)
# ---------------------------------------------------------------------------


def _seq_factory(seed):
    return SequenceDataset(_sequences([10, 23, 30, 8]), 10, 2, minimum_size=3, seed=seed)


def _batch_factory(seed):
    x = np.arange(4 * 11 * 2, dtype=np.float64).reshape(4, 11, 2)
    y = np.arange(11.0).reshape(11, 1)
    return BatchDataset([x, y], 3, 2, case_axis=[1, 0], seed=seed)


@pytest.mark.parametrize("factory", [_seq_factory, _batch_factory])
@pytest.mark.parametrize("kind", ["int", "philox"])
def test_resume_with_own_generator_replays_exactly(factory, kind):
    if kind == "philox":  # a Generator passed in, with array-valued state fields
        seed_a, seed_b = np.random.Generator(np.random.Philox(5)), np.random.Generator(np.random.Philox(5))
        seed_fresh = np.random.Generator(np.random.Philox(1))
    else:
        seed_a = seed_b = 5
        seed_fresh = 999
    reference = _run(factory(seed_a), 7)
    b = factory(seed_b)
    part1 = _run(b, 3)
    state = _through_serialization(b.state_dict())
    fresh = factory(seed_fresh)
    fresh.load_state_dict(state)
    part2 = _run(fresh, 4)
    _assert_same_items(reference, part1 + part2)


@pytest.mark.parametrize("factory", [_seq_factory, _batch_factory])
def test_resume_in_global_rng_mode_replays_and_restores_global_state(factory):
    np.random.seed(2024)
    reference = _run(factory(None), 7)
    after_reference = np.random.random(3)

    np.random.seed(2024)
    b = factory(None)
    part1 = _run(b, 3)
    state = _through_serialization(b.state_dict())
    np.random.seed(31337)  # a new process would start from another global state
    np.random.random(17)
    fresh = factory(None)
    fresh.load_state_dict(state)
    part2 = _run(fresh, 4)
    _assert_same_items(reference, part1 + part2)
    np.testing.assert_array_equal(np.random.random(3), after_reference)


@pytest.mark.parametrize("factory", [_seq_factory, _batch_factory])
def test_resume_without_loading_would_differ(factory):
    """Guard for the resume tests: without load_state_dict the continuation is different."""
    reference = _run(factory(5), 7)
    assert not _same_items(reference[6:], _run(factory(999), 4))
    b = factory(5)
    _run(b, 3)
    state = b.state_dict()
    _run(b, 2)  # moving on after saving, then restoring, goes back
    b.load_state_dict(state)
    assert _same_items(reference[6:], _run(b, 4))


def test_resume_through_checkpoint_file(tmp_path):
    a = _batch_factory(8)
    reference = _run(a, 6)
    b = _batch_factory(8)
    part1 = _run(b, 2)
    state = b.state_dict()
    path = tmp_path / "ds.ckpt"
    save_checkpoint(path, {f"data/{k}": v for k, v in state["arrays"].items()}, {"data": state["json"]})
    arrays, meta = load_checkpoint(path)
    fresh = _batch_factory(123)
    fresh.load_state_dict({"json": meta["data"],
                           "arrays": {k[len("data/"):]: v for k, v in arrays.items()}})
    _assert_same_items(reference, part1 + _run(fresh, 4))


def test_state_dict_structure_is_json_plus_arrays():
    ds = _seq_factory(None)
    state = ds.state_dict()
    assert set(state) == {"json", "arrays"}
    json.dumps(state["json"], allow_nan=False)  # plain JSON data
    assert state["json"]["rng_mode"] == "global"
    assert state["json"]["rng"]["state"]["key"] == {"__array__": "rng.state.key"}
    assert state["arrays"]["rng.state.key"].shape == (624,)
    np.testing.assert_array_equal(np.sort(state["arrays"]["order"]), np.arange(len(ds)))
    own_ds = _seq_factory(3)
    own = own_ds.state_dict()
    ref = np.random.default_rng(3)
    ref.permutation(len(own_ds))  # the one shuffle done at construction
    assert own["json"]["rng"] == ref.bit_generator.state
    assert own["json"]["rng"]["bit_generator"] == "PCG64"
    assert set(own["arrays"]) == {"order"}


def test_load_state_mismatch_and_corruption_leave_dataset_unchanged():
    ds = _seq_factory(5)
    _run(ds, 2)
    before = _through_serialization(ds.state_dict())

    other = SequenceDataset(_sequences([10, 23, 30]), 10, 2, minimum_size=3, seed=5)  # 7 items, not 8
    with pytest.raises(CheckpointMismatchError, match="num_items: saved 7, current 8"):
        ds.load_state_dict(other.state_dict())
    with pytest.raises(CheckpointMismatchError, match="'BatchDataset'"):
        ds.load_state_dict(_batch_factory(5).state_dict())
    with pytest.raises(CheckpointMismatchError, match="rng_mode 'global'"):
        ds.load_state_dict(_seq_factory(None).state_dict())
    same_count = SequenceDataset(_sequences([10, 23, 30, 8]), 10, 3, minimum_size=3, seed=5)
    with pytest.raises(CheckpointMismatchError, match="number_batches: saved 3, current 2"):
        ds.load_state_dict(same_count.state_dict())

    good = ds.state_dict()
    bad_order = {"json": good["json"], "arrays": dict(good["arrays"], order=np.zeros(len(ds), dtype=np.int64))}
    with pytest.raises(CheckpointCorruptError, match="permutation of range"):
        ds.load_state_dict(bad_order)
    bad_pos = {"json": dict(good["json"], position=len(ds)), "arrays": good["arrays"]}
    with pytest.raises(CheckpointCorruptError, match=f"position {len(ds)}"):
        ds.load_state_dict(bad_pos)
    bad_rng = {"json": dict(good["json"], rng={"bit_generator": "PCG64", "state": "nonsense"}),
               "arrays": good["arrays"]}
    with pytest.raises(CheckpointCorruptError, match="invalid RNG state"):
        ds.load_state_dict(bad_rng)
    wrong_bitgen = {"json": dict(good["json"], rng={"bit_generator": "MT19937"}), "arrays": good["arrays"]}
    with pytest.raises(CheckpointMismatchError, match="MT19937"):
        ds.load_state_dict(wrong_bitgen)
    with pytest.raises(CheckpointCorruptError, match="'json' dict"):
        ds.load_state_dict({"position": 0})

    after = _through_serialization(ds.state_dict())
    assert after["json"] == before["json"]
    np.testing.assert_array_equal(after["arrays"]["order"], before["arrays"]["order"])


# ---------------------------------------------------------------------------
# SequenceDataset: validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(data=np.zeros((2, 10, 3))), "expected a non-empty list"),
        (dict(data=[]), "expected a non-empty list"),
        (dict(data=[np.zeros((4, 10))]), "data[0] has type ndarray"),
        (dict(data=[[np.zeros(12)] * 3, [np.zeros(12)] * 2]), "input 1 has 2 sequences but input 0 has 3"),
        (dict(data=[[], []]), "zero sequences"),
        (dict(data=[[np.zeros(12), np.zeros(7)]]),
         "sequence 1 has length 7 along axis 0, shorter than minimum_size = 10"),
        (dict(data=[[np.zeros(12)], [np.zeros(11)]]), "sequence 0 has 11 rows in input 1 but 12 in input 0"),
        (dict(data=[[np.float64(1.0)]]), "data[0][0] is 0-d"),
        (dict(batch_size=0), "batch_size = 0; expected an int >= 1"),
        (dict(batch_size=2.5), "batch_size = 2.5"),
        (dict(number_batches=0), "number_batches = 0; expected an int >= 1"),
        (dict(minimum_size=0), "minimum_size = 0; expected an int >= 1"),
        (dict(number_batches=True), "number_batches = True"),
        (dict(seed="abc"), "seed = 'abc'"),
        (dict(seed=-1), "seed = -1"),
    ],
)
def test_sequence_dataset_validation(kwargs, fragment):
    args = dict(data=[[np.zeros((12, 2))], [np.zeros((12, 1))]], batch_size=5, number_batches=1, minimum_size=10)
    args.update(kwargs)
    with pytest.raises(DatasetError) as info:
        SequenceDataset(args.pop("data"), args.pop("batch_size"), args.pop("number_batches"), **args)
    assert fragment in str(info.value)


def test_repr_and_len():
    ds = SequenceDataset(_sequences([20]), 10, 1, minimum_size=5, seed=0)
    assert len(ds) == 2
    assert repr(ds).startswith("SequenceDataset(num_items=2,") and "rng_mode='own'" in repr(ds)


# ---------------------------------------------------------------------------
# BatchDataset
# ---------------------------------------------------------------------------


def _rnn_data(T=3, B=10, F=2):
    """x[t, b, f] = 100*b + 10*t + f (case b along axis 1); y[b, 0] = b."""
    t, b, f = np.meshgrid(np.arange(T), np.arange(B), np.arange(F), indexing="ij")
    x = (100.0 * b + 10.0 * t + f)
    y = np.arange(B, dtype=np.float64)[:, None]
    return x, y


def _case_ids(item, T=3, F=2):
    x, y = item
    ids = y[:, 0].astype(int)
    t, f = np.meshgrid(np.arange(T), np.arange(F), indexing="ij")
    for col, case in enumerate(ids):  # every input carries the same case in the same column
        np.testing.assert_array_equal(x[:, col, :], 100.0 * case + 10.0 * t + f)
    return ids.tolist()


def test_batch_dataset_case_axis_list_and_reference_permutations():
    x, y = _rnn_data(B=10)
    ds = BatchDataset([x, y], batch_size=4, number_batches=1, case_axis=[1, -2], seed=3)
    assert len(ds) == 2 and ds.num_cases == 10 and ds.case_axes == (1, 0)
    ref = np.random.default_rng(3)
    perms = [ref.permutation(10) for _ in range(3)]
    got = [_case_ids(item) for _ in range(6) for item in ds.iterate()]
    expected = [perms[e][k * 4:(k + 1) * 4].tolist() for e in range(3) for k in range(2)]
    assert got == expected
    for item in ds.iterate(update=False):
        assert item[0].shape == (3, 4, 2) and item[1].shape == (4, 1)


def test_batch_dataset_whole_data_single_item_draws_nothing():
    x, y = _rnn_data(B=6)
    rng = np.random.default_rng(0)
    state0 = rng.bit_generator.state
    ds = BatchDataset([x, y], batch_size=6, number_batches=2, case_axis=[1, 0], seed=rng)
    assert len(ds) == 1
    items = list(ds.iterate())
    assert len(items) == 2 and items[0][0] is x and items[0][1] is y and items[1][0] is x
    list(ds.iterate())
    assert rng.bit_generator.state == state0


def test_batch_dataset_no_shuffle_gives_ordered_views():
    x, y = _rnn_data(B=9)
    ds = BatchDataset([x, y], batch_size=4, number_batches=3, case_axis=[1, 0], shuffle=False, seed=0)
    items = list(ds.iterate())
    assert [_case_ids(i) for i in items] == [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]]  # case 8 unused
    assert all(np.shares_memory(i[0], x) and np.shares_memory(i[1], y) for i in items)
    assert [_case_ids(i) for i in ds.iterate()] == [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]]


def test_batch_dataset_global_rng_mode_reproducible():
    x, y = _rnn_data(B=12)

    def run():
        np.random.seed(77)
        ds = BatchDataset([x, y], 5, 1, case_axis=[1, 0])
        return [_case_ids(i) for _ in range(6) for i in ds.iterate()]

    first = run()
    assert first == run()
    np.random.seed(77)
    perm = np.random.permutation(12)
    assert first[0] == perm[:5].tolist() and first[1] == perm[5:10].tolist()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 45),
    number_batches=st.integers(1, 5),
    n_calls=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    features=st.integers(1, 3),
)
def test_batch_dataset_property_epochs_and_shapes(n, batch_size, number_batches, n_calls, seed, features):
    x = np.broadcast_to(np.arange(n, dtype=np.float64)[None, :, None], (2, n, features)).copy()
    y = np.arange(n, dtype=np.int64)[:, None]
    ds = BatchDataset([x, y], batch_size, number_batches, case_axis=[1, 0], seed=seed)
    whole = batch_size >= n
    n_items = 1 if whole else n // batch_size
    size = n if whole else batch_size
    assert len(ds) == n_items

    # One epoch, one item per call: every case at most once, exactly n_items * size distinct cases.
    epoch = BatchDataset([x, y], batch_size, 1, case_axis=[1, 0], seed=seed)
    seen = []
    for _ in range(n_items):
        (item,) = list(epoch.iterate())
        assert item[0].shape == (2, size, features) and item[1].shape == (size, 1)
        np.testing.assert_array_equal(item[0][0, :, 0], item[1][:, 0])
        seen.extend(item[1][:, 0].tolist())
    assert len(seen) == len(set(seen)) == n_items * size
    assert set(seen) <= set(range(n))
    assert epoch.position == 0
    if n_items * size == n:
        assert sorted(seen) == list(range(n))

    # Independent model of the 2012 position rule and the permutation stream.
    ref = np.random.default_rng(seed)
    perm = np.arange(n) if whole else ref.permutation(n)
    pos = 0
    for _ in range(n_calls):
        got = [item[1][:, 0].tolist() for item in ds.iterate()]
        want = []
        for b in range(number_batches):
            k = (pos + b) % n_items
            want.append(perm[k * size:(k + 1) * size].tolist())
        assert got == want
        if pos + number_batches >= n_items:
            pos = 0
            if not whole:
                perm = ref.permutation(n)
        else:
            pos += number_batches
        assert ds.position == pos


@pytest.mark.parametrize(
    "arrays, kwargs, fragment",
    [
        ([np.zeros((3, 10, 2)), np.zeros((9, 1))], dict(case_axis=[1, 0]),
         "input 0 has 10 along axis 1, input 1 has 9 along axis 0"),
        ([np.zeros((5, 2)), np.array([[0.0], [np.nan], [1.0], [2.0], [np.inf]])], {},
         "input 1 holds 2 non-finite value(s) (NaN or inf), the first at index (1, 0)"),
        ([np.zeros((0, 3))], {}, "0 cases"),
        ([], {}, "non-empty list"),
        (np.zeros((5, 2)), {}, "arrays of type ndarray"),
        ([np.zeros((5, 2))], dict(batch_size=0), "batch_size = 0; expected an int >= 1"),
        ([np.zeros((5, 2))], dict(number_batches=0), "number_batches = 0; expected an int >= 1"),
        ([np.zeros((5, 2))], dict(case_axis=2), "case_axis 2 is out of range for input 0 with shape (5, 2)"),
        ([np.zeros((5, 2)), np.zeros(5)], dict(case_axis=[0]), "has 1 entries; expected 2"),
        ([np.zeros((5, 2))], dict(case_axis="0"), "case_axis = '0'"),
        ([np.array(3.0)], {}, "input 0 is 0-d"),
        ([np.array(["a", "b"])], {}, "dtype <U1"),
        ([np.zeros((5, 2))], dict(shuffle="yes"), "shuffle = 'yes'"),
        ([np.zeros((5, 2))], dict(seed=1.5), "seed = 1.5"),
    ],
)
def test_batch_dataset_validation(arrays, kwargs, fragment):
    args = dict(batch_size=2, number_batches=1)
    args.update(kwargs)
    with pytest.raises(DatasetError) as info:
        BatchDataset(arrays, args.pop("batch_size"), args.pop("number_batches"), **args)
    assert fragment in str(info.value)


def test_batch_dataset_repr_and_properties():
    ds = BatchDataset([np.zeros((7, 3))], 2, 3, seed=1)
    assert (len(ds), ds.num_cases, ds.batch_size, ds.number_batches, ds.shuffle) == (3, 7, 2, 3, True)
    assert repr(ds).startswith("BatchDataset(num_items=3, num_cases=7, batch_size=2")


# ---------------------------------------------------------------------------
# Growing batches
# ---------------------------------------------------------------------------


def test_growing_batch_follows_the_geometric_schedule_hand_computed():
    # 2 items of 5 cases, x1.5 per update: floor(2 * 1.5**u) = 2, 3, 4 (4.5), 6 (6.75), then the cap of 8
    ds = BatchDataset([np.arange(200.0)[:, None]], 5, 2, growth=1.5, max_batches=8, seed=0)
    counts = []
    for _ in range(7):
        counts.append(sum(1 for _ in ds.iterate()))
    assert counts == [2, 3, 4, 6, 8, 8, 8]
    assert (ds.updates, ds.number_batches, ds.growth, ds.max_batches) == (7, 8, 1.5, 8)


def test_growing_batch_without_cap_stops_at_all_items_and_visits_each_once_per_epoch():
    x = np.arange(40.0)[:, None]
    ds = BatchDataset([x], 4, 1, growth=3.0, shuffle=False)  # 10 items: 1, 3, 9, then 10 (all)
    seen = [np.concatenate([item[0][:, 0] for item in ds.iterate()]) for _ in range(4)]
    assert [len(s) // 4 for s in seen] == [1, 3, 9, 10]
    # positions advance by the current number: items 0 | 1-3 | 4-9 then 0-2 (wrap) | new epoch: all 10
    np.testing.assert_array_equal(seen[0], x[:4, 0])
    np.testing.assert_array_equal(seen[1], x[4:16, 0])
    np.testing.assert_array_equal(seen[2], np.concatenate([x[16:40, 0], x[:12, 0]]))
    np.testing.assert_array_equal(seen[3], x[:, 0])


def test_fixed_and_growing_datasets_agree_until_the_first_growth():
    a = BatchDataset([np.arange(100.0)[:, None]], 5, 2, seed=3)
    b = BatchDataset([np.arange(100.0)[:, None]], 5, 2, seed=3, growth=1.2)  # 2.4 -> 2, 2.88 -> 2, 3.46 -> 3
    _assert_same_items(_run(a, 3), _run(b, 3))
    assert a.number_batches == 2 and b.number_batches == 3


def test_growth_one_keeps_the_saved_configuration_of_a_fixed_dataset():
    fixed = BatchDataset([np.zeros((10, 2))], 2, 1, seed=0)
    state = fixed.state_dict()
    assert "growth" not in state["json"]["config"]
    # a state saved before the updates field existed still loads into a fixed dataset
    del state["json"]["updates"]
    BatchDataset([np.zeros((10, 2))], 2, 1, seed=0).load_state_dict(state)


@pytest.mark.parametrize("factory", [
    lambda seed: SequenceDataset(_sequences([7] * 12), 3, 1, minimum_size=1, seed=seed, growth=1.4, max_batches=9),
    lambda seed: BatchDataset([np.arange(120.0)[:, None], -np.arange(120.0)[:, None]], 4, 1, seed=seed,
                              growth=1.4, max_batches=9),
])
def test_resume_of_a_growing_dataset_replays_exactly(factory):
    reference = _run(factory(5), 9)
    b = factory(5)
    part1 = _run(b, 4)
    assert b.number_batches == 3  # floor(1.4**4) = 3: resumed mid-growth
    fresh = factory(999)
    fresh.load_state_dict(_through_serialization(b.state_dict()))
    assert (fresh.updates, fresh.number_batches) == (4, 3)
    _assert_same_items(reference, part1 + _run(fresh, 5))


def test_growing_state_does_not_load_into_another_schedule_and_bad_updates_are_refused():
    def make(**kw):
        return BatchDataset([np.zeros((40, 2))], 2, 1, seed=0, **kw)

    grown = make(growth=2.0, max_batches=8)
    _run(grown, 2)
    state = grown.state_dict()
    for other in (make(), make(growth=1.5, max_batches=8), make(growth=2.0, max_batches=4)):
        with pytest.raises(CheckpointMismatchError, match="growth|max_batches"):
            other.load_state_dict(state)
    state["json"]["updates"] = -1
    target = make(growth=2.0, max_batches=8)
    with pytest.raises(CheckpointCorruptError, match="updates -1"):
        target.load_state_dict(state)
    assert (target.updates, target.number_batches) == (0, 1)  # unchanged


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(growth=0.5), "growth = 0.5; expected a finite number >= 1"),
    (dict(growth=float("nan")), "growth = nan"),
    (dict(growth=True), "growth = True"),
    (dict(growth="2"), "growth = '2'"),
    (dict(growth=2.0, max_batches=1), "max_batches = 1; expected None or an int >= number_batches (2)"),
    (dict(max_batches=0), "max_batches = 0; expected an int >= 1"),
])
def test_growth_validation(kwargs, fragment):
    with pytest.raises(DatasetError) as info:
        BatchDataset([np.zeros((10, 2))], 2, 2, **kwargs)
    assert fragment in str(info.value)
    with pytest.raises(DatasetError):
        SequenceDataset(_sequences([5, 5]), None, 2, **kwargs)
