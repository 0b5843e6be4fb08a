"""SAPO's replay buffer: a FIFO of (prompt, chosen, rejected) token triples, sampled with weight 1/(1 + times drawn).

SAPO (arXiv 2405.20830, Sec. 3) pushes every freshly generated pair into the buffer and trains on a batch drawn
from it, so a pair can be revisited after the policy has moved on, but ever less often. Randomness only comes in
through an explicit torch.Generator, so a run that saves the buffer and the generator state resumes bit-exactly.
"""

import json
import math
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields

import torch

from sapo.files import write_jsonl

__all__ = ["BufferEntry", "ReplayBuffer", "mean_age"]


@dataclass
class BufferEntry:
    """One self-augmented preference pair; token ids, answers without the prompt."""

    prompt_ids: list[int]
    chosen_ids: list[int]  # the real answer y+
    rejected_ids: list[int]  # A + B' (+ C): the EMA model's segment spliced into y+
    segment_start: int  # [segment_start, segment_end) is B, the span of chosen_ids that the EMA model rewrote
    segment_end: int
    generated_len: int  # len(B'), tokens the EMA model produced
    ended_early: bool  # B' hit EOS inside the segment, so the real tail C was not spliced back
    # The draw count lives in the entry, unlike the reference code, which keys it by id() of the Python object:
    # an id means nothing after a save and reload (and may be reused by a new object), a field survives both.
    times_sampled: int = 0
    step_added: int = 0  # optimizer step at which the pair was generated, for the sample-age metric


_FIELDS = [f.name for f in fields(BufferEntry)]


class ReplayBuffer:
    """First in, first out: once `capacity` entries are held, each new entry evicts the oldest one."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"buffer_size must be at least 1, got {capacity}")
        self.capacity = capacity
        self.entries: deque[BufferEntry] = deque(maxlen=capacity)  # maxlen drops from the left: oldest first

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entries: Iterable[BufferEntry]) -> None:
        self.entries.extend(entries)

    def weights(self) -> torch.Tensor:
        """Sampling probability of each entry, oldest first: proportional to 1 / (1 + times_sampled), float64."""
        w = torch.tensor([1.0 / (1 + e.times_sampled) for e in self.entries], dtype=torch.float64)
        return w / w.sum()

    def sample(self, batch_size: int, generator: torch.Generator) -> list[BufferEntry]:
        """Draw min(len, batch_size) entries WITH replacement, then count each draw on its entry.

        As in the reference code (`random.choices`), the weights are fixed for the whole call from the counts as
        they stood before it, so one call can return the same entry twice; that entry's count then goes up by 2.
        The entries themselves are returned (not copies), their counts already incremented.
        """
        k = min(len(self.entries), batch_size)
        if k == 0:
            return []
        idx = torch.multinomial(self.weights(), k, replacement=True, generator=generator)
        drawn = [self.entries[i] for i in idx.tolist()]
        for entry in drawn:
            entry.times_sampled += 1
        return drawn

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "entries": [asdict(e) for e in self.entries]}

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"saved buffer has capacity {state['capacity']}, this one {self.capacity}")
        self.entries = deque((BufferEntry(**e) for e in state["entries"]), maxlen=self.capacity)

    def save_jsonl(self, path: str | os.PathLike) -> None:
        """One JSON object per entry, oldest first, written atomically: a crash mid-save leaves the previous file."""
        write_jsonl(path, [asdict(entry) for entry in self.entries])

    @classmethod
    def load_jsonl(cls, path: str | os.PathLike, capacity: int) -> "ReplayBuffer":
        """Read a `save_jsonl` file. With a smaller capacity than was saved, only the newest entries are kept."""
        buffer = cls(capacity)
        with open(path) as f:
            for line_no, line in enumerate(f, start=1):
                obj = json.loads(line)
                if sorted(obj) != sorted(_FIELDS):
                    raise ValueError(f"{path}:{line_no}: keys {sorted(obj)} are not the BufferEntry fields {_FIELDS}")
                buffer.entries.append(BufferEntry(**obj))
        return buffer


def mean_age(entries: Iterable[BufferEntry], step: int) -> float:
    """Mean of (step - step_added) over `entries`, NaN if there are none: how stale a sampled batch is (logged as
    `sapo/sample_age`)."""
    ages = [step - e.step_added for e in entries]
    return sum(ages) / len(ages) if ages else math.nan
