"""Segment cut and splice (sapo.train.segment), against hand-computed boundaries."""

import torch

from sapo.train.segment import segment_bounds, splice

EOS = 2
ANSWER = list(range(100, 120))  # 20 real answer tokens: 100, 101, ..., 119


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- segment_bounds


def test_segment_bounds_start_covers_inclusive_range():
    # answer_len 20, L = min(5, 20) = 5, latest start = 20 - 3 - 5 = 12, inclusive: 13 values.
    g = _gen(0)
    draws = [segment_bounds(20, 5, room=1000, generator=g) for _ in range(2000)]
    assert {length for _, length in draws} == {5}
    starts = {start for start, _ in draws}
    assert starts == set(range(13))  # both ends (0 and 12) reached, 13 never


def test_segment_bounds_short_answer_starts_at_zero():
    # answer_len 6, L = 5: latest start = 6 - 3 - 5 = -2 <= 0 -> start 0, no draw.
    assert segment_bounds(6, 5, room=1000, generator=_gen()) == (0, 5)
    # answer_len 3 < max_new_tokens 256: L = 3, latest start = 3 - 3 - 3 < 0.
    assert segment_bounds(3, 256, room=1000, generator=_gen()) == (0, 3)
    # latest start exactly 0: 8 - 3 - 5 = 0 -> start 0.
    assert segment_bounds(8, 5, room=1000, generator=_gen()) == (0, 5)


def test_segment_bounds_room_caps_start():
    # answer_len 100, L 5: latest start 100 - 3 - 5 = 92, but room 7 caps it to 0..7.
    g = _gen(1)
    starts = {segment_bounds(100, 5, room=7, generator=g)[0] for _ in range(1000)}
    assert starts == set(range(8))
    # A negative room (the reference's randint(0, -4) would raise) clamps to start 0.
    assert segment_bounds(100, 5, room=-4, generator=_gen()) == (0, 5)


def test_segment_bounds_same_seed_same_draws():
    g1, g2 = _gen(7), _gen(7)
    a = [segment_bounds(500, 256, room=1000, generator=g1) for _ in range(50)]
    b = [segment_bounds(500, 256, room=1000, generator=g2) for _ in range(50)]
    assert a == b
    assert len({s for s, _ in a}) > 1  # 500 - 3 - 256 = 241: many possible starts


def test_segment_bounds_leaves_global_rng_alone():
    state = torch.get_rng_state()
    segment_bounds(100, 5, room=100, generator=_gen())
    assert torch.equal(state, torch.get_rng_state())


# ---------------------------------------------------------------- splice


def test_splice_eos_inside_segment_drops_tail():
    # A = answer[:4] = 100..103; B' cut right after its EOS = [50, 51, 2]; C dropped.
    rejected, ended, n = splice(ANSWER, 4, 5, [50, 51, EOS, 53, 54], EOS)
    assert rejected == [100, 101, 102, 103, 50, 51, EOS]
    assert ended is True and n == 3


def test_splice_no_eos_keeps_real_tail_token_exact():
    # A = answer[:4] (4 tokens), B' 5 tokens, C = answer[4 + 5:] = 109..119 (11 tokens): 20 in all.
    rejected, ended, n = splice(ANSWER, 4, 5, [50, 51, 52, 53, 54], EOS)
    assert rejected[:4] == ANSWER[:4]
    assert rejected[4:9] == [50, 51, 52, 53, 54]
    assert rejected[9:] == ANSWER[9:] == list(range(109, 120))
    assert len(rejected) == 20 and ended is False and n == 5


def test_splice_eos_first_generated_token():
    rejected, ended, n = splice(ANSWER, 4, 5, [EOS, 60, 61], EOS)
    assert rejected == [100, 101, 102, 103, EOS]
    assert ended is True and n == 1


def test_splice_start_zero():
    # A empty; C = answer[3:] = 103..119.
    rejected, ended, n = splice(ANSWER, 0, 3, [7, 8, 9], EOS)
    assert rejected == [7, 8, 9] + list(range(103, 120))
    assert ended is False and n == 3


def test_splice_segment_reaches_answer_end():
    # start 15, length 5: 15 + 5 = 20 = len(answer), so C is empty.
    rejected, ended, n = splice(ANSWER, 15, 5, [7, 8, 9, 10, 11], EOS)
    assert rejected == list(range(100, 115)) + [7, 8, 9, 10, 11]
    assert ended is False and n == 5


def test_splice_short_generation_without_eos_keeps_tail_after_full_segment():
    # As in the reference, C starts at start + length = 9 even though B' has only 2 tokens:
    # 4 + 2 + 11 = 17 tokens.
    rejected, ended, n = splice(ANSWER, 4, 5, [50, 51], EOS)
    assert rejected == [100, 101, 102, 103, 50, 51] + list(range(109, 120))
    assert ended is False and n == 2


def test_splice_cuts_generation_to_segment_length():
    # 7 generated tokens for a 3-token segment: only [50, 51, 52] is used; the EOS at index 5
    # lies beyond the segment and does not count.
    rejected, ended, n = splice(ANSWER, 4, 3, [50, 51, 52, 53, 54, EOS, 56], EOS)
    assert rejected == [100, 101, 102, 103, 50, 51, 52] + list(range(107, 120))
    assert ended is False and n == 3


def test_splice_several_eos_ids():
    rejected, ended, n = splice(ANSWER, 2, 5, [50, 3, EOS, 53], [EOS, 3])
    assert rejected == [100, 101, 50, 3]
    assert ended is True and n == 2
    assert splice(ANSWER, 2, 5, [50, 3, EOS], {3})[0] == [100, 101, 50, 3]


def test_splice_generated_len_never_exceeds_length():
    g = _gen(3)
    for _ in range(200):
        start, length = segment_bounds(20, int(torch.randint(0, 25, (1,), generator=g)), 1000, g)
        n_gen = int(torch.randint(0, 30, (1,), generator=g))
        generated = torch.randint(0, 8, (n_gen,), generator=g).tolist()
        rejected, ended, n = splice(ANSWER, start, length, generated, EOS)
        assert n <= length
        assert rejected[:start] == ANSWER[:start]
        assert ended == (EOS in generated[:length])
