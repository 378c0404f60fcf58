"""Configs of clip_saft: `default.py` (procedural benchmark, `:smoke` for CPU), `gpu.py`, `paper.py`."""
