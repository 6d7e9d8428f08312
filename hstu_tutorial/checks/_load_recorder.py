"""Which rows of given tensors a Triton kernel reads, program by program, under the Triton interpreter.

The interpreter routes every `tl.load` (plain, masked, block pointer) through one builder method; wrapping
it shows the addresses a program really read (mask true). The check of the HSTU forward uses it to see
whether a causal kernel skips the key tiles that lie entirely after its query block.
"""

from __future__ import annotations

import torch


class LoadRecorder:
    """Context manager: records (program id, tensor name, first row, last row) for each load that reads
    rows of the named tensors (rows along dim 0). `active` is False when kernels do not run in the
    interpreter (a GPU run): nothing is recorded then."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.regions = {
            name: (t.data_ptr(), t.data_ptr() + t.numel() * t.element_size(), t.stride(0) * t.element_size())
            for name, t in tensors.items()
            if t.numel()
        }
        self.events: list[tuple[tuple, str, int, int]] = []
        self.active = False
        self._builder = None

    def __enter__(self):
        try:
            from triton.runtime import interpreter
        except ImportError:
            return self
        builder = interpreter.interpreter_builder
        original = builder.create_masked_load

        def load(ptrs, mask, other, *args, **kwargs):
            self._record(builder, ptrs, mask)
            return original(ptrs, mask, other, *args, **kwargs)

        builder.create_masked_load = load  # an instance attribute shadows the method while recording
        self._builder, self.active = builder, True
        return self

    def __exit__(self, *exc):
        if self._builder is not None:
            del self._builder.create_masked_load
        return False

    def _record(self, builder, ptrs, mask) -> None:
        import numpy as np

        addr = np.asarray(ptrs.data)
        if addr.dtype.kind not in "iu":
            return
        addr = addr.astype(np.uint64)
        read = addr[np.broadcast_to(np.asarray(mask.data, dtype=bool), addr.shape)]  # masked-off: no read
        for name, (lo, hi, row_bytes) in self.regions.items():
            inside = read[(read >= lo) & (read < hi)]
            if inside.size:
                rows = (inside - np.uint64(lo)) // np.uint64(row_bytes)
                program = getattr(builder, "grid_idx", None)
                self.events.append((program, name, int(rows.min()), int(rows.max())))

    def loads_after_queries(self, query: str, keys: tuple[str, ...]):
        """The first load of a `keys` tensor whose rows all come after the last row of the latest `query`
        load of the same program: (query first, query last, key first, key last), or None.
        Also returns whether any query load was seen (False: the kernel read copies, nothing to say)."""
        last_q: dict = {}
        for program, name, first, last in self.events:
            if name == query:
                last_q[program] = (first, last)
            elif name in keys and program in last_q and first > last_q[program][1]:
                return (*last_q[program], first, last), True
        return None, bool(last_q)
