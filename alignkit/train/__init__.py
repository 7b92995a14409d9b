"""One offline training loop (loop.py), one online loop (online.py), and one short file per method."""

from alignkit.train.dpo import train_dpo
from alignkit.train.group import train_grpo, train_rloo
from alignkit.train.hbat import train_hbat
from alignkit.train.iterative_dpo import train_iterative_dpo
from alignkit.train.kto import train_kto
from alignkit.train.orpo import train_orpo
from alignkit.train.ppo import train_ppo
from alignkit.train.reward import train_reward
from alignkit.train.sft import train_sft

TRAINERS = {
    "sft": train_sft,
    "reward": train_reward,
    "dpo": train_dpo,
    "orpo": train_orpo,
    "kto": train_kto,
    "ppo": train_ppo,
    "grpo": train_grpo,
    "rloo": train_rloo,
    "iterative-dpo": train_iterative_dpo,
    "hbat": train_hbat,
}

__all__ = ["TRAINERS", "train_dpo", "train_grpo", "train_hbat", "train_iterative_dpo", "train_kto", "train_orpo", "train_ppo", "train_reward", "train_rloo",
           "train_sft"]
