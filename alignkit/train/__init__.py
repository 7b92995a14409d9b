"""One training loop (loop.py) and one short file per method."""

from alignkit.train.dpo import train_dpo
from alignkit.train.kto import train_kto
from alignkit.train.orpo import train_orpo
from alignkit.train.reward import train_reward
from alignkit.train.sft import train_sft

TRAINERS = {"sft": train_sft, "reward": train_reward, "dpo": train_dpo, "orpo": train_orpo, "kto": train_kto}

__all__ = ["TRAINERS", "train_dpo", "train_kto", "train_orpo", "train_reward", "train_sft"]
