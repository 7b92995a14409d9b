"""The training loops every method shares: the run and its core (run.py: output directory, optimizer, schedule,
resume, checkpoint cadence, metrics, progress, summary), the offline step (loop.py), the online step (online.py),
checkpoints, metrics and the typed config parts (config.py). The methods themselves are in `alignkit/methods/`."""
