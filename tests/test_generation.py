"""The shared decoding loop (sapo.generation): transformers' warpers as we chain them, batched greedy
decoding equal to one row at a time, EOS and budgets per row, seeded sampling on an explicit generator."""

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from sapo.generation import (
    WEIGHT_MAJOR_ROWS,
    sample_continuations,
    sampling_warpers,
    weight_major_applies,
    weight_major_linears,
)

EOS = 2


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- sampling warpers (transformers' own, as we chain them)


def filter_logits(logits: torch.Tensor, top_k, top_p: float) -> torch.Tensor:
    """What sample_continuations does to one row's logits at temperature 1 before the softmax."""
    return sampling_warpers(1.0, top_k, top_p)(None, logits[None])[0]


def test_temperature_divides_the_logits_before_top_k_and_top_p():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    assert torch.equal(sampling_warpers(0.5, 0, 1.0)(None, logits.clone()), logits / 0.5)
    # probs at T=1: .644 .237 .087 .032, head sums .644 .881: top_p .75 keeps two;
    # at T=2: .455 .276 .167 .102, head sums .455 .731 .898: the same top_p keeps three
    assert _kept(sampling_warpers(1.0, 0, 0.75)(None, logits.clone())[0]) == [0, 1]
    assert _kept(sampling_warpers(2.0, 0, 0.75)(None, logits.clone())[0]) == [0, 1, 2]


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


# ---------------------------------------------------------------- --cpu-fast-decoding (weight-first products, opt-in)


def test_weight_major_changes_each_plain_linear_while_open_and_restores_it(tiny_model):
    linears = [m for m in tiny_model.modules() if type(m) is torch.nn.Linear]
    assert len(linears) == 2 * 7 + 1  # q, k, v, o, gate, up, down per layer; the LM head
    hooked = tiny_model.model.layers[0].mlp.down_proj
    hooked.forward = hooked.forward  # an instance forward, as accelerate's hooks set: left alone
    try:
        with weight_major_linears(tiny_model, enabled=False) as changed:
            assert changed == 0 and all("forward" not in vars(m) for m in linears if m is not hooked)
        with weight_major_linears(tiny_model) as changed:
            assert changed == len(linears) - 1
        assert all("forward" not in vars(m) for m in linears if m is not hooked)
    finally:
        del hooked.forward


def test_weight_major_applies_on_a_cpu_only():
    assert weight_major_applies(True, "cpu") and weight_major_applies(True, torch.device("cpu"))
    assert not weight_major_applies(False, "cpu")
    assert not weight_major_applies(True, "cuda") and not weight_major_applies(True, "cuda:1")


@pytest.mark.parametrize("bias", [False, True])
def test_weight_major_product_is_the_linear_map_and_only_where_measured_faster(bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(96, 200, bias=bias)
    holder = torch.nn.Sequential(layer)
    assert list(WEIGHT_MAJOR_ROWS) == [2, 3, 4, 5, 6, 7, 8]  # the rows the bench notes measured faster
    for rows in (1, 2, 3, 8, 9, 16, 64):
        x = torch.randn(rows, 1, 96)  # (batch, one position, features): a decoding step's shape
        standard = layer(x)
        with weight_major_linears(holder):
            fast = layer(x)
        assert fast.shape == standard.shape and fast.is_contiguous()
        if rows not in WEIGHT_MAJOR_ROWS:  # one row, many rows, a prefill: the standard product, bit for bit
            assert torch.equal(fast, standard)
        else:  # the same map summed in another order: equal to float32 rounding, not bit for bit
            torch.testing.assert_close(fast, standard, rtol=1e-5, atol=1e-5)


def test_weight_major_warns_once_when_only_the_output_layer_would_change(tiny_gpt2, tiny_model, monkeypatch):
    import sapo.generation as generation

    warned = []
    monkeypatch.setattr(generation.logger, "warning", warned.append)
    monkeypatch.setattr(generation, "_WARNED_NO_LINEAR", set())
    for _ in range(2):  # GPT-2 projects with Conv1D: only its LM head is a plain nn.Linear
        with weight_major_linears(tiny_gpt2) as changed:
            assert changed == 1
    assert len(warned) == 1 and "GPT2LMHeadModel's layers are no plain nn.Linear" in warned[0]
    assert "output layer only" in warned[0]
    with weight_major_linears(tiny_model):  # LLaMA's layers are: no warning
        pass
    assert len(warned) == 1


def test_weight_major_decoding_keeps_the_greedy_tokens_and_the_default_is_standard(tiny_model):
    standard = _greedy(tiny_model, CONTEXTS, 8, eos_token_id=None)
    fast = sample_continuations(tiny_model, CONTEXTS, 8, pad_token_id=0, eos_token_id=None, temperature=1.0,
                                top_k=None, top_p=1.0, generator=None, do_sample=False, weight_major=True)  # fmt: skip
    # This model's margins (initializer_range 0.5) are far above 1e-5: no near tie for the order of sums to flip.
    assert fast == standard
    assert standard == [_greedy_alone(tiny_model, c, 8, eos_token_id=None) for c in CONTEXTS]
    assert all("forward" not in vars(m) for m in tiny_model.modules())
