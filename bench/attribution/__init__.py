"""Attribution benchmark (issue 6): tasks with known ground truth, ours vs peer methods side by side.

Run it with `bench/bench_attribution.py`; see bench/attribution/README.md.
"""
