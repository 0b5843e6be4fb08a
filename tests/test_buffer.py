"""Replay buffer: FIFO order, 1/(1 + times sampled) weights, seeded sampling, and the JSONL round trip."""

import json
import math
import random
from dataclasses import fields

import pytest
import torch
from scipy.stats import chisquare

from sapo.train.buffer import BufferEntry, ReplayBuffer, mean_age


def entry(step: int, times_sampled: int = 0) -> BufferEntry:
    """A small entry whose step_added doubles as its identity in these tests."""
    return BufferEntry(
        prompt_ids=[1, 2, step],
        chosen_ids=[10, 11, 12, 13],
        rejected_ids=[10, 21, 22],
        segment_start=1,
        segment_end=3,
        generated_len=2,
        ended_early=step % 2 == 0,
        times_sampled=times_sampled,
        step_added=step,
    )


def steps(entries) -> list[int]:
    return [e.step_added for e in entries]


def test_fifo_evicts_oldest_first():
    buffer = ReplayBuffer(capacity=3)
    for step in range(5):
        buffer.add([entry(step)])
    # 0, 1, 2 fill it; 3 evicts 0; 4 evicts 1
    assert len(buffer) == 3
    assert steps(buffer.entries) == [2, 3, 4]
    buffer.add([entry(5), entry(6)])  # one call, two evictions: 2 then 3
    assert steps(buffer.entries) == [4, 5, 6]


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="buffer_size"):
        ReplayBuffer(capacity=0)


def test_weight_drops_as_one_over_one_plus_count():
    # against a never-drawn neighbour, an entry drawn 0, 1, 2 times weighs 1, 1/2, 1/3
    buffer = ReplayBuffer(capacity=4)
    buffer.add([entry(0), entry(1)])
    for times, ratio in [(0, 1.0), (1, 1 / 2), (2, 1 / 3)]:
        buffer.entries[0].times_sampled = times
        w = buffer.weights()
        assert (w[0] / w[1]).item() == pytest.approx(ratio, rel=1e-15)


def test_weights_normalized_exactly():
    # counts 0, 1, 2 -> 1, 1/2, 1/3; sum 11/6 -> 6/11, 3/11, 2/11
    buffer = ReplayBuffer(capacity=3)
    buffer.add([entry(0, times_sampled=0), entry(1, times_sampled=1), entry(2, times_sampled=2)])
    w = buffer.weights()
    assert w.dtype == torch.float64
    torch.testing.assert_close(w, torch.tensor([6 / 11, 3 / 11, 2 / 11], dtype=torch.float64), rtol=1e-15, atol=0)


def test_single_draw_frequencies_chi_square():
    # counts 0, 1, 3 -> weights 1, 1/2, 1/4, sum 7/4 -> probabilities 4/7, 2/7, 1/7. Counts are reset before every
    # draw so all 20000 draws share this distribution: expected 11428.6, 5714.3, 2857.1.
    buffer = ReplayBuffer(capacity=3)
    buffer.add([entry(0), entry(1), entry(2)])
    generator = torch.Generator().manual_seed(0)
    tally = [0, 0, 0]
    for _ in range(20_000):
        for e, times in zip(buffer.entries, (0, 1, 3), strict=True):
            e.times_sampled = times
        (drawn,) = buffer.sample(1, generator)
        tally[drawn.step_added] += 1
    expected = [20_000 * 4 / 7, 20_000 * 2 / 7, 20_000 * 1 / 7]
    assert chisquare(tally, expected).pvalue > 0.001


def test_weights_fixed_within_one_call():
    # With k = 3 every position of a call is drawn from the weights before the call (4/7, 2/7, 1/7), as with
    # random.choices; re-weighting between draws would make the later positions favour entries 1 and 2.
    buffer = ReplayBuffer(capacity=3)
    buffer.add([entry(0), entry(1), entry(2)])
    generator = torch.Generator().manual_seed(1)
    tallies = [[0, 0, 0] for _ in range(3)]
    for _ in range(7_000):
        for e, times in zip(buffer.entries, (0, 1, 3), strict=True):
            e.times_sampled = times
        for position, drawn in enumerate(buffer.sample(3, generator)):
            tallies[position][drawn.step_added] += 1
    for tally in tallies:
        assert chisquare(tally, [7_000 * 4 / 7, 7_000 * 2 / 7, 7_000 * 1 / 7]).pvalue > 0.001


def test_counts_increment_including_duplicates():
    buffer = ReplayBuffer(capacity=2)
    buffer.add([entry(0), entry(1)])
    generator = torch.Generator().manual_seed(3)
    draws = [0, 0]
    saw_duplicate = False
    for _ in range(20):
        batch = buffer.sample(2, generator)
        assert len(batch) == 2  # with replacement: k = min(2, 2) draws, not 2 distinct entries
        saw_duplicate |= batch[0] is batch[1]
        for drawn in batch:
            draws[drawn.step_added] += 1
    assert saw_duplicate  # a call that drew one entry twice counted it twice
    assert [e.times_sampled for e in buffer.entries] == draws
    assert sum(draws) == 40


def test_batch_capped_by_buffer_size():
    buffer = ReplayBuffer(capacity=5)
    assert buffer.sample(4, torch.Generator().manual_seed(0)) == []
    buffer.add([entry(0), entry(1)])
    assert len(buffer.sample(4, torch.Generator().manual_seed(0))) == 2  # k = min(2, 4)


def test_same_seed_same_draws_and_no_global_rng():
    def run(seed: int) -> list[list[int]]:
        buffer = ReplayBuffer(capacity=5)
        buffer.add([entry(s) for s in range(5)])
        generator = torch.Generator().manual_seed(seed)
        return [steps(buffer.sample(3, generator)) for _ in range(10)]

    torch_state, python_state = torch.get_rng_state(), random.getstate()
    assert run(123) == run(123)
    assert run(123) != run(124)
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state


def test_jsonl_round_trip(tmp_path):
    buffer = ReplayBuffer(capacity=3)
    buffer.add([entry(0, times_sampled=2), entry(1), entry(2, times_sampled=5)])
    path = tmp_path / "buffer.jsonl"
    buffer.save_jsonl(path)
    buffer.save_jsonl(path)  # overwriting is fine too
    assert [p.name for p in tmp_path.iterdir()] == ["buffer.jsonl"]  # no temp file left behind

    lines = path.read_text().splitlines()
    assert len(lines) == 3
    names = {f.name for f in fields(BufferEntry)}
    for line in lines:
        assert set(json.loads(line)) == names
    assert json.loads(lines[0])["times_sampled"] == 2

    loaded = ReplayBuffer.load_jsonl(path, capacity=3)
    assert loaded.capacity == 3 and list(loaded.entries) == list(buffer.entries)
    assert steps(ReplayBuffer.load_jsonl(path, capacity=2).entries) == [1, 2]  # smaller: keeps the newest


def test_jsonl_rejects_unknown_keys(tmp_path):
    path = tmp_path / "bad.jsonl"
    obj = {f.name: getattr(entry(0), f.name) for f in fields(BufferEntry)} | {"id": 7}
    path.write_text(json.dumps(obj) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        ReplayBuffer.load_jsonl(path, capacity=3)


def test_state_dict_round_trip():
    buffer = ReplayBuffer(capacity=3)
    buffer.add([entry(0, times_sampled=1), entry(1)])
    state = json.loads(json.dumps(buffer.state_dict()))  # plain data only
    restored = ReplayBuffer(capacity=3)
    restored.load_state_dict(state)
    assert list(restored.entries) == list(buffer.entries)
    restored.add([entry(2), entry(3)])  # capacity survives: 0 is evicted
    assert steps(restored.entries) == [1, 2, 3]
    with pytest.raises(ValueError, match="capacity 3"):
        ReplayBuffer(capacity=4).load_state_dict(state)


def test_mean_age():
    # at step 10, entries added at 2 and 5 are 8 and 5 steps old: (8 + 5) / 2 = 6.5
    assert mean_age([entry(2), entry(5)], step=10) == 6.5
    assert math.isnan(mean_age([], step=10))
