"""Peer comparisons of SPCXR Hub (issue 6): `python -m benchmarks [--quick] [--only P1,P3] [--threads N] [--device cpu|cuda]`.

Results go to `benchmarks/results/results.json` and `results.md`. `benchmarks/pretrain_step.py` (P2) also runs alone.
"""
