"""The training loops every method shares: the offline loop (loop.py), the online loop (online.py), checkpoints,
metrics and the typed config parts (config.py). The methods themselves are in `alignkit/methods/`."""
