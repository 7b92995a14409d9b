"""Pipelines of several runs: Constitutional AI (cai.py), the side-by-side comparison (compare.py) and the demo."""
