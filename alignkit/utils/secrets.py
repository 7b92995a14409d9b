"""Secrets never leave the process: what counts as one, and how it is kept out of what alignkit writes or shows.

A secret is the value of a key or environment variable named as one (`api_key`, `hf_token`, `OPENAI_API_KEY`,
`password`, ...; a name ending in `_env`, such as `api_key_env`, names the variable that holds a key and is not one).
Configs refuse secrets outright (`train/config.py`), so the config files, manifests and model cards a run writes
cannot hold one; `redact` and `redact_env` are the second line, for specs and free text that are written or shown.
"""

from __future__ import annotations

import os
import re
from typing import Any

REDACTED = "<redacted>"
# The whole name, or its last part after "_" / "-": `max_new_tokens` is not a secret, `hf_token` is.
SECRET_NAME = re.compile(r"(?:^|[_-])(?:api[_-]?key|apikey|token|secret|password|passwd|authorization)$",
                         re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(str(name))) and not str(name).endswith("_env")


def secret_path(value: Any, path: str = "") -> str | None:
    """The dotted path of the first non-empty secret-named key in a dict/list tree, else None."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if is_secret_name(key) and item:
                return here
            found = secret_path(item, here)
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = secret_path(item, f"{path}[{i}]")
            if found:
                return found
    return None


def redact(value: Any) -> Any:
    """A dict/list tree with the values of secret-named keys replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_name(k) and v else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def redact_env(text: str) -> str:
    """`text` with the value of every secret-named environment variable replaced."""
    for name, value in os.environ.items():
        if is_secret_name(name) and len(value) >= 6:
            text = text.replace(value, REDACTED)
    return text


__all__ = ["REDACTED", "is_secret_name", "redact", "redact_env", "secret_path"]
