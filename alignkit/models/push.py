"""`alignkit push MODEL_DIR REPO`: a trained model, its card and the config that trained it, to a Hugging Face Hub
model repository (created if it does not exist). The hub client takes the token from `HF_TOKEN` or `hf auth login`
and the address from `HF_ENDPOINT`, as every Hugging Face tool does."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

# What a model folder must hold to be pushed: transformers' config and weights (a full model or a LoRA adapter).
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


class PushError(ValueError):
    """The folder is not a model to push, or the hub refused it."""


@dataclass
class Pushed:
    repo: str
    url: str
    files: list[str]


def push_model(model_dir: str | Path, repo: str, *, private: bool = False, message: str | None = None,
               api=None) -> Pushed:
    """Upload `model_dir` (a run's final/ or any HF model folder) with the run's config.yaml beside it (as
    `alignkit_config.yaml`, when the folder is a run's final/) to `repo`. `api`: a `huggingface_hub.HfApi` (default:
    a new one)."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise PushError(f"{folder}: not a folder (a run's final/ or a Hugging Face model folder)")
    if not ((folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()):
        raise PushError(f"{folder}: no config.json or adapter_config.json: not a model folder")
    if not any((folder / name).is_file() for name in WEIGHTS):
        raise PushError(f"{folder}: no weights ({', '.join(WEIGHTS)})")
    if "/" not in repo or repo.count("/") > 1:
        raise PushError(f"repo {repo!r}: expected OWNER/NAME")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise PushError("HF_HUB_OFFLINE is set: pushing needs the hub (unset it)")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    run_config = folder.parent / "config.yaml"
    with tempfile.TemporaryDirectory() as staging:
        upload = Path(staging) / "model"
        shutil.copytree(folder, upload)
        if run_config.is_file() and not (upload / "alignkit_config.yaml").exists():
            shutil.copy2(run_config, upload / "alignkit_config.yaml")
        files = sorted(str(p.relative_to(upload)) for p in upload.rglob("*") if p.is_file())
        try:
            url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(folder_path=str(upload), repo_id=repo, repo_type="model",
                              commit_message=message or f"alignkit: upload {folder.parent.name}/{folder.name}")
        except Exception as error:  # noqa: BLE001 - the hub client raises many kinds (HTTP, auth, network); say which
            raise PushError(f"the hub refused {repo}: {type(error).__name__}: {str(error)[:300]}") from error
    return Pushed(repo, str(url), files)
