"""The window operators: fold_window, reduce_window, collect_window, split by concern.

- `state`: one key's watermark and open windows, and the memo of forgotten keys.
- `op`: `WindowOp`, the lifecycle: items in (the general path), windows
  closing on timers, end of input.
- `recovery`: what a window step saves of its keys in a snapshot, and
  restoring them.
- `fast_path`: the inlined hot loop of tumbling and sliding windows on the
  event clock, the common case.
- `ticks`: closing what is due on a tick, inlined for sync user code, and
  the metadata of a closed window.
- `kinds`: how each of the three operators accumulates.
"""
