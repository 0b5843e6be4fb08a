"""The segment step of SAPO: cut the real answer y+ into A | B | C, let the EMA model write B'
in place of B, and splice the rejected answer y- back together.

The cut and the splice are pure functions on token-id lists; the model that writes B' runs
through the shared decoding loop, ``sapo.generation.sample_continuations``. Randomness comes
in through an explicit ``torch.Generator`` (never the global RNG).
"""

from collections.abc import Iterable

import torch

from sapo.generation import eos_set


def segment_bounds(answer_len: int, max_new_tokens: int, room: int, generator: torch.Generator) -> tuple[int, int]:
    """Choose where the segment B starts in an answer of ``answer_len`` tokens, and its length.

    The length is L = min(max_new_tokens, answer_len). The latest start is
    ``answer_len - 3 - L``, so that at least 3 real tokens (the last is the EOS the reference
    appends to the answer) follow the segment. If it is positive the start is uniform over the
    integers 0..min(latest, room) *inclusive*, else 0. The "-3" and the inclusive upper bound
    are the reference code's (``random.randint(0, k)`` in ``tokenize_batch_element``).

    ``room`` is how many answer tokens fit before the segment under the length limit:
    ``max_length - min(prompt_len, max_prompt_length) - L`` in the reference. A negative room
    (the reference's ``randint`` would raise) gives start 0.
    """
    if answer_len < 0 or max_new_tokens < 0:
        raise ValueError(f"answer_len and max_new_tokens must be >= 0, got {answer_len}, {max_new_tokens}")
    length = min(max_new_tokens, answer_len)
    max_start = answer_len - 3 - length
    if max_start <= 0:
        return 0, length
    hi = max(0, min(max_start, room))
    start = int(torch.randint(0, hi + 1, (1,), generator=generator).item())
    return start, length


def splice(
    answer_ids: list[int],
    start: int,
    length: int,
    generated_ids: list[int],
    eos_token_id: int | Iterable[int] | None,
) -> tuple[list[int], bool, int]:
    """Build the rejected answer from the real one and the generated segment.

    With A = answer[:start] and C = answer[start + length:], the generated B' is first cut to
    ``length`` tokens and then right after its first EOS (the EOS is kept). If B' ended with EOS
    the rejected answer is A + B' and the real tail C is dropped (the reference code's choice;
    the paper only describes A + B' + C); otherwise it is A + B' + C.

    A B' shorter than ``length`` without EOS is spliced as A + B' + C with C still starting at
    ``start + length``, as the reference does: the answer then comes out shorter.

    Returns ``(rejected_ids, ended_early, generated_len)``, ``generated_len = len(B')``.
    """
    if not 0 <= start <= len(answer_ids) or length < 0:
        raise ValueError(f"bad segment start={start} length={length} for an answer of {len(answer_ids)} tokens")
    eos = eos_set(eos_token_id)
    segment = list(generated_ids[:length])
    ended_early = False
    for i, token in enumerate(segment):
        if token in eos:
            segment, ended_early = segment[: i + 1], True
            break
    prefix = list(answer_ids[:start])
    tail = [] if ended_early else list(answer_ids[start + length :])
    return prefix + segment + tail, ended_early, len(segment)
