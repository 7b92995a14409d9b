"""alignkit: post-training alignment of causal language models (SFT, reward models, PPO, DPO family, evaluation)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("alignkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
