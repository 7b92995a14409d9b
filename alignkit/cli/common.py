"""What every command of the command line shares: the error a refused command raises, the help formatter that shows
defaults, and the generation flags."""

from __future__ import annotations

import argparse

from alignkit.utils import sampling_defaults as defaults


class CommandError(Exception):
    """A command refused as given (a bad argument, an output that exists): `alignkit X: error: ...`, exit status 2,
    as for a bad config or bad data."""


class WithDefaults(argparse.RawDescriptionHelpFormatter):
    """The help of `generate`, `chat` and `eval`: each option's default beside it (where it has one), and the epilog
    as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not unset and action.option_strings and "default" not in text:
            text = f"{text} (default: {action.default})".strip()
        return text


def precision_argument(p) -> None:
    # The choices of utils/precision.PRECISIONS, written out so that building the parser imports no torch.
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 where the CPU/GPU runs it fast, else fp32")


def sampling_arguments(p, *, max_new_tokens: int) -> None:
    """The generation flags `generate` and `chat` share."""
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help="longest reply, in tokens")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-p", type=float, default=defaults.TOP_P,
                   help="sampling: keep the smallest set of tokens with this much probability")
    p.add_argument("--system", help="a system message before each conversation")
    precision_argument(p)
