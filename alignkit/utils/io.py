"""Atomic file and directory writes.

Every output alignkit produces (models, checkpoints, metrics summaries, caches) goes through these helpers so that an
interrupted process never leaves a half-written file where a complete one is expected: data is written next to the
destination under a temporary name and then renamed, which is atomic on POSIX filesystems.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _temp_file(path: Path) -> tuple[int, Path]:
    """A new file beside `path`, opened for writing. Created with mode 0o666 and so given the permissions a plain
    open() would give under the process's umask (tempfile.mkstemp makes owner-only files)."""
    while True:
        tmp = _temp_name(path)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _temp_dir(path: Path) -> Path:
    """A new folder beside `path`, with the permissions os.mkdir gives under the umask (mkdtemp: owner-only)."""
    while True:
        tmp = _temp_name(path)
        try:
            tmp.mkdir(0o777)
            return tmp
        except FileExistsError:
            continue


def plain_modes(folder: Path) -> None:
    """Give every file under `folder` the mode a plain open() gives under the umask: transformers writes
    model.safetensors owner-only (0600), which other users of a shared model folder then cannot read."""
    mask = os.umask(0)
    os.umask(mask)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o666 & ~mask)


def remove_leftovers(folder: str | Path) -> int:
    """Remove the temporary files and folders (`.NAME.HEX.tmp`) that writes killed half-way left in `folder`; the
    caller holds the folder (`lock_folder`), so no write of another process can be among them. Returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    found = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    for path in found:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return len(found)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSONL file's text. Split at newlines only: `str.splitlines` also splits at U+2028, U+0085 and
    the like, which `json.dumps(ensure_ascii=False)` leaves unescaped in generated text a row may hold."""
    return text.split("\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes `path` only if the block finishes without an exception.

    With replace=False an existing `path` is an error (a run never silently overwrites another's results); with
    replace=True the old directory is swapped out only after the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not replace:
        raise FileExistsError(f"{path} already exists; refusing to overwrite it")
    tmp = _temp_dir(path)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def torch_save(obj: Any, path: str | Path) -> None:
    """`torch.save` through a Python file, so that a failed write raises the OSError that says why (no space left,
    read-only): given a path, torch's own writer reports a full disk only as "unexpected pos 113311040 vs ..."."""
    import torch

    with open(path, "wb") as handle:
        torch.save(obj, handle)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file(path)
    os.close(fd)
    try:
        torch_save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class UnsafeFileError(RuntimeError):
    """A file would run code when loaded (a pickle of arbitrary objects, custom model code)."""


def safe_torch_load(path: str | Path) -> Any:
    """`torch.load` of tensors and plain values only (`weights_only=True`): anything else in the file, which
    unpickling would run, is refused with an error naming the file. The only way alignkit reads a torch pickle."""
    import torch

    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnsafeFileError(
            f"{path}: holds Python objects besides tensors and plain values, and unpickling them could run code, so "
            f"it is refused (a tampered file, or one written by an alignkit older than this check; {reason})"
        ) from None


def claim_config_dir(folder: str | Path, config: dict, may_change: tuple[str, ...] = ()) -> list[str] | str | None:
    """A folder holds one configuration's results (its `config.json`). Returns None when `config` may use the folder
    (recorded there now if new), the top-level keys that differ from the recorded one, or "foreign" when the folder
    is not empty and records none. Keys in `may_change` may differ (they choose what to run, not how: the record is
    updated to `config`). The caller words the error."""
    folder = Path(folder)
    path = folder / "config.json"
    if path.is_file():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        differ = sorted(k for k in set(recorded) | set(config) if recorded.get(k) != config.get(k))
        refused = [k for k in differ if k not in may_change]
        if not refused and differ:
            atomic_write_json(path, config)
        return refused or None
    if folder.is_dir() and any(entry.name != LOCK_FILE for entry in folder.iterdir()):
        return "foreign"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, config)
    return None


LOCK_FILE = ".alignkit.lock"
_held: dict[str, list] = {}  # resolved folder -> [lock file descriptor, times claimed by this process, made by it]


class FolderInUse(RuntimeError):
    """Another running process holds the run folder."""


def lock_folder(folder: str | Path) -> None:
    """Claim the run folder `folder` for this process: a second process that claims it while this one runs is refused
    at once, naming the holder. The claim is an exclusive `flock` on `folder/.alignkit.lock`, which the kernel drops
    when the process ends however it ends (a SIGKILLed run leaves nothing stuck). Claims nest within one process
    (a pipeline and the run it starts in the same folder): `unlock_folder` as often as `lock_folder`. A folder the
    claim made is removed with the last unlock if nothing but the lock file was written into it (a run that failed
    before it began)."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _held:
        _held[key][1] += 1
        return
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "its process id is not recorded"
        os.close(fd)
        raise FolderInUse(f"{folder} is in use by another running alignkit process ({holder}); wait for it to "
                          "finish or stop it, or choose another output_dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)[:300]}\n"
              .encode(), 0)
    _held[key] = [fd, 1, created]


@contextlib.contextmanager
def locked_folder(folder: str | Path) -> Iterator[None]:
    """`lock_folder` for the length of a block."""
    lock_folder(folder)
    try:
        yield
    finally:
        unlock_folder(folder)


def release_folders() -> None:
    """Give back every claim this process holds (the command line, as a command ends however it ends: a run that
    failed before it began leaves no folder holding only the lock file)."""
    for key in list(_held):
        _held[key][1] = 1
        unlock_folder(key)


def unlock_folder(folder: str | Path) -> None:
    """Give back one claim of `lock_folder`; the last one releases the folder to other processes."""
    key = str(Path(folder).resolve())
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[key]
        folder = Path(key)
        if entry[2] and [p.name for p in folder.iterdir()] == [LOCK_FILE]:  # made for a run that wrote nothing
            with contextlib.suppress(OSError):
                (folder / LOCK_FILE).unlink()
                folder.rmdir()
        os.close(entry[0])  # closing the descriptor drops the flock
