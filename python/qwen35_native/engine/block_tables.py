"""The block tables of a step as an int32 tensor, without rebuilding them from Python lists every step.

A step's plan lists each sequence's KV blocks. Turning those lists into a tensor costs about 5 ms of host time
per step at batch 64 and a 32k context (2M Python ints), in the decode steps where the GPU work is a few ms. But
a sequence's block list only grows while it runs (the scheduler appends), so :class:`BlockTableMirror` keeps one
host row per GDN slot and copies only the entries a row gained since the last step; the table of a step is then
one ``index_select`` of its slots' rows. A row is trusted only when the plan names the same sequence (``table_keys``:
its id and preemption count, the same on every tensor-parallel rank) with at least as many blocks; anything else,
a plan without keys included, rewrites the row. Columns past a row's own blocks read the padding block, as before.

Tests: tests/engine/test_block_tables.py.
"""

from __future__ import annotations

import torch


class BlockTableMirror:
    def __init__(self, num_slots: int, max_blocks: int, pad_block: int):
        self.pad_block = pad_block
        self.rows = torch.full((num_slots, max(max_blocks, 1)), pad_block, dtype=torch.int32)
        self.keys: list = [None] * num_slots
        self.lens = [0] * num_slots

    def table(self, slots: list[int], tables: list[list[int]], keys: list | None = None) -> torch.Tensor:
        """int32 ``[len(slots), max(1, longest table)]`` on the host: row i holds ``tables[i]``, then the padding
        block. ``keys[i]`` identifies the sequence holding ``slots[i]`` (None: unknown, the row is rewritten)."""
        width = max([1] + [len(t) for t in tables])
        if len(set(slots)) != len(slots) or any(not 0 <= s < len(self.keys) for s in slots):
            return self._direct(tables, width)   # not a plan of distinct sequence slots: no mirror
        if width > self.rows.shape[1]:
            extra = torch.full((self.rows.shape[0], width - self.rows.shape[1]), self.pad_block, dtype=torch.int32)
            self.rows = torch.cat([self.rows, extra], dim=1)
        at_rows, at_cols, values = [], [], []   # the entries rows gained, written with one index_put_
        for i, (slot, blocks) in enumerate(zip(slots, tables)):
            key = None if keys is None else keys[i]
            known = self.lens[slot] if key is not None and key == self.keys[slot] else 0
            start = known if len(blocks) >= known else 0
            if len(blocks) - start > 4:   # a new or rewritten row: one slice assignment
                self.rows[slot, start:len(blocks)] = torch.tensor(blocks[start:], dtype=torch.int32)
            elif len(blocks) > start:    # a block or two more: gathered into one write for all rows
                at_rows += [slot] * (len(blocks) - start)
                at_cols += range(start, len(blocks))
                values += blocks[start:]
            self.keys[slot], self.lens[slot] = key, len(blocks)
        if values:
            self.rows[torch.tensor(at_rows), torch.tensor(at_cols)] = torch.tensor(values, dtype=torch.int32)
        out = self.rows[:, :width].index_select(0, torch.tensor(slots, dtype=torch.long))   # a new, dense tensor
        lens = [len(t) for t in tables]
        if min(lens) < width:
            out.masked_fill_(torch.arange(width)[None, :] >= torch.tensor(lens)[:, None], self.pad_block)
        return out

    def _direct(self, tables: list[list[int]], width: int) -> torch.Tensor:
        return torch.tensor([t + [self.pad_block] * (width - len(t)) for t in tables], dtype=torch.int32).reshape(
            len(tables), width)
