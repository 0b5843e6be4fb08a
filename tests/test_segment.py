"""Segment cut, splice, logit filtering and batched decoding (sapo.train.segment)."""

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from sapo.train.segment import filter_logits, sample_continuations, segment_bounds, splice

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


# ---------------------------------------------------------------- filter_logits


def _kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits).nonzero().flatten().tolist()


def test_filter_logits_top_k_keeps_two_largest():
    logits = torch.tensor([1.0, 3.0, 0.5, 2.0, -1.0])
    out = filter_logits(logits, top_k=2, top_p=1.0)
    assert _kept(out) == [1, 3]  # 3.0 and 2.0
    assert out[1] == 3.0 and out[3] == 2.0  # kept values untouched
    assert torch.equal(filter_logits(logits, top_k=0, top_p=1.0), logits)
    assert torch.equal(filter_logits(logits, top_k=None, top_p=1.0), logits)
    assert _kept(filter_logits(logits, top_k=99, top_p=1.0)) == [0, 1, 2, 3, 4]


# probs 0.5, 0.3, 0.1, 0.06, 0.04 placed out of order, so the sort must be undone correctly.
PROBS = [0.1, 0.5, 0.04, 0.3, 0.06]
LOG_PROBS = torch.tensor([math.log(p) for p in PROBS])


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [
        # Most likely first: 0.5 | 0.5+0.3 = 0.8 | 0.9 | 0.96 | 1.0. Keep the smallest head
        # reaching top_p. (0.8 itself sits on the float boundary, so test either side of it.)
        (0.75, [1, 3]),  # 0.5 < 0.75 <= 0.8: two tokens
        (0.85, [0, 1, 3]),  # 0.8 < 0.85 <= 0.9: three
        (0.4, [1]),  # 0.5 >= 0.4 already: one
        (1e-6, [1]),  # always at least one
        (0.99, [0, 1, 2, 3, 4]),  # 0.96 < 0.99: all five
    ],
)
def test_filter_logits_top_p(top_p, kept):
    assert _kept(filter_logits(LOG_PROBS, top_k=None, top_p=top_p)) == kept


def test_filter_logits_top_k_before_top_p():
    # top_p 0.85 alone keeps three (above). top_k 3 first renormalises 0.5, 0.3, 0.1 over 0.9:
    # 0.556, 0.333, 0.111; the head 0.556 + 0.333 = 0.889 >= 0.85 already, so two remain.
    assert _kept(filter_logits(LOG_PROBS, top_k=3, top_p=0.85)) == [1, 3]


def test_filter_logits_matches_transformers_warpers():
    g = _gen(5)
    logits = torch.randn(4, 64, generator=g) * 3
    for top_k, top_p in [(50, 0.95), (5, 1.0), (0, 0.7), (10, 0.3)]:
        expected = logits
        if top_k:
            expected = TopKLogitsWarper(top_k)(None, expected)
        if top_p < 1.0:
            expected = TopPLogitsWarper(top_p)(None, expected)
        assert torch.equal(torch.isfinite(filter_logits(logits, top_k, top_p)), torch.isfinite(expected))


# ---------------------------------------------------------------- sample_continuations


# initializer_range 0.5 (default 0.02): with tiny weights the output hardly depends on any
# token but the last, and a wrong attention mask would go unnoticed.
@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.5,
    )
    return LlamaForCausalLM(config).eval()


# RoPE is shift-invariant, so only a model with absolute position embeddings shows wrong
# position_ids under left padding.
@pytest.fixture(scope="module")
def tiny_gpt2():
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=64,
        n_embd=16,
        n_layer=2,
        n_head=2,
        n_positions=128,
        initializer_range=0.5,
        bos_token_id=1,
        eos_token_id=2,
    )
    return GPT2LMHeadModel(config).eval()


CONTEXTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [3, 4], [20, 21, 22, 23, 24], [40]]


def _greedy_alone(model, context: list[int], n: int, eos_token_id) -> list[int]:
    model.generation_config.eos_token_id = eos_token_id
    ids = torch.tensor([context])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n, pad_token_id=0)
    return out[0, len(context) :].tolist()


def _greedy(model, contexts, n, eos_token_id, pad_token_id=0):
    return sample_continuations(
        model,
        contexts,
        n,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        temperature=1.0,
        top_k=None,
        top_p=1.0,
        generator=None,
        do_sample=False,
    )


@pytest.mark.parametrize("model_name", ["tiny_model", "tiny_gpt2"])
@pytest.mark.parametrize("pad_token_id", [0, 5])  # 5 is also a real context token
def test_greedy_batched_equals_each_context_alone(request, model_name, pad_token_id):
    model = request.getfixturevalue(model_name)
    batched = _greedy(model, CONTEXTS, 8, eos_token_id=None, pad_token_id=pad_token_id)
    alone = [_greedy_alone(model, c, 8, eos_token_id=None) for c in CONTEXTS]
    assert batched == alone
    assert all(len(row) == 8 for row in batched)


def test_greedy_batched_equals_alone_with_eos(tiny_model):
    # EOS = the first greedy token of context 1, so generate() stops that row after 1 token.
    eos = _greedy(tiny_model, [CONTEXTS[1]], 1, eos_token_id=None)[0][0]
    batched = _greedy(tiny_model, CONTEXTS, 8, eos_token_id=eos)
    alone = [_greedy_alone(tiny_model, c, 8, eos_token_id=eos) for c in CONTEXTS]
    assert batched == alone
    assert batched[1] == [eos]


def test_per_row_max_new_tokens(tiny_model):
    full = _greedy(tiny_model, CONTEXTS, 6, eos_token_id=None)
    out = _greedy(tiny_model, CONTEXTS, [6, 1, 0, 3], eos_token_id=None)
    assert [len(row) for row in out] == [6, 1, 0, 3]
    assert out == [full[0], full[1][:1], [], full[3][:3]]
    assert _greedy(tiny_model, CONTEXTS, 0, eos_token_id=None) == [[], [], [], []]


def test_rows_stop_after_eos(tiny_model):
    full = _greedy(tiny_model, CONTEXTS, 8, eos_token_id=None)
    eos = full[0][0]  # certain: row 0 emits it first

    def cut(row, ids):  # expected: up to and including the first end token
        hits = [i for i, t in enumerate(row) if t in ids]
        return row[: hits[0] + 1] if hits else row

    out = _greedy(tiny_model, CONTEXTS, 8, eos_token_id=eos)
    assert out[0] == [eos]
    assert out == [cut(row, {eos}) for row in full]
    # Several end tokens: the first of either stops a row.
    eos_ids = [eos, full[2][0]]
    out = _greedy(tiny_model, CONTEXTS, 8, eos_token_id=eos_ids)
    assert out == [cut(row, set(eos_ids)) for row in full]
    assert out[2] == [full[2][0]]


def _sample(model, seed, **kw):
    params = dict(temperature=0.7, top_k=50, top_p=0.95) | kw
    return sample_continuations(model, CONTEXTS, 10, pad_token_id=0, eos_token_id=None, generator=_gen(seed), **params)


def test_sampling_seeded_and_independent_of_global_rng(tiny_model):
    state = torch.get_rng_state()
    a = _sample(tiny_model, 0)
    assert torch.equal(state, torch.get_rng_state())
    torch.manual_seed(123)  # the global RNG has no say
    assert _sample(tiny_model, 0) == a
    assert _sample(tiny_model, 1) != a
    assert all(len(row) == 10 for row in a)


def test_sampling_with_top_k_1_is_greedy(tiny_model):
    sampled = _sample(tiny_model, 0, temperature=1.0, top_k=1, top_p=1.0)
    assert sampled == _greedy(tiny_model, CONTEXTS, 10, eos_token_id=None)


@pytest.mark.parametrize("training", [True, False])
def test_training_flag_restored(tiny_model, training):
    tiny_model.train(training)
    _sample(tiny_model, 0)
    assert tiny_model.training is training
    assert all(m.training is training for m in tiny_model.modules())
    tiny_model.eval()


def test_bad_arguments_raise(tiny_model):
    with pytest.raises(ValueError, match="max_new_tokens"):
        _greedy(tiny_model, CONTEXTS, [1, 2], eos_token_id=None)
    with pytest.raises(ValueError, match="at least one token"):
        _greedy(tiny_model, [[1], []], 2, eos_token_id=None)
    with pytest.raises(ValueError, match="temperature"):
        _sample(tiny_model, 0, temperature=0.0)
