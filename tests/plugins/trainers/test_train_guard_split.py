"""How trainer batches are cut for the memory guard: DPO [chosen; rejected] rows stay paired,
and trl's padding-free rows (BFD packing) split by sequence and flatten back exactly."""

from __future__ import annotations

import torch

from hwkit.allocator.guard import _split
from hwkit.plugins.trainers.guarded import (
    _flatten_sequences,
    _is_padding_free,
    _pair,
    _sequence_rows,
    _unpair,
)


def test_dpo_batches_split_by_pair() -> None:
    chosen = torch.tensor([[1, 1, 0], [2, 2, 2], [3, 0, 0]])
    rejected = torch.tensor([[-1, 0, 0], [-2, -2, 0], [-3, -3, -3]])
    batch = {"input_ids": torch.cat([chosen, rejected]), "completion_mask": torch.ones(6, 3)}
    paired = _pair(batch)
    assert paired["input_ids"].shape == (3, 2, 3)
    assert torch.equal(_unpair(paired)["input_ids"], batch["input_ids"])
    for chunk, rows in _split(paired, 2, 3):
        ids = _unpair(chunk)["input_ids"]
        first, second = ids[:rows], ids[rows:]
        # the chunk is [chosen of its pairs; rejected of the same pairs]
        assert bool((first[:, 0] > 0).all())
        assert torch.equal(first[:, 0], -second[:, 0])


def test_padding_free_rows_split_by_sequence() -> None:
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    ids = torch.arange(10, 19)[None]
    labels = ids.masked_fill(pos == 0, -100)
    cu = torch.tensor([0, 3, 5, 9], dtype=torch.int32)
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2]], dtype=torch.int32)
    batch = {
        "input_ids": ids,
        "labels": labels,
        "position_ids": pos,
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": 4,
        "max_length_k": 4,
        "seq_idx": seq_idx,
    }
    assert _is_padding_free(batch)
    assert not _is_padding_free({**batch, "attention_mask": torch.ones_like(ids)})
    rows = _sequence_rows(batch)
    assert rows["input_ids"].shape == (3, 4)
    back = _flatten_sequences(rows)
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(back[key], value), key
        else:
            assert back[key] == value, key
    chunks = [_flatten_sequences(c) for c, _ in _split(rows, 2, 3)]
    assert torch.equal(torch.cat([c["input_ids"] for c in chunks], dim=1), ids)
    assert [c["cu_seq_lens_q"].tolist() for c in chunks] == [[0, 3, 5], [0, 4]]
    assert torch.equal(torch.cat([c["labels"] for c in chunks], dim=1), labels)
