"""Where an output came from: recorded in the metadata of every checkpoint and mask.

    {"aimfair": "0.1.0", "torch": "2.14.1", "torchvision": "0.29.1", "python": "3.11.9", "device": "cpu",
     "git_commit": "3a384a9…" or null, "inputs": {"--model": {"path": "pretrain.safetensors", "sha256": "…"}}}

The SHA-256 of each input file ties a mask to the exact checkpoint its gradients were computed on, so
`finetune` can refuse a mask made on another model (a path alone says nothing once files are replaced).
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Mapping

_CHUNK = 1 << 20
_hashes: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: each file is read once


def sha256_file(path: str | os.PathLike) -> str:
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hashes:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
        _hashes[key] = h.hexdigest()
    return _hashes[key]


def git_commit() -> str | None:
    """The commit of the source tree aimfair runs from, when it is a git checkout ("+dirty" with local
    changes); None for an installed package or without git."""
    here = Path(__file__).resolve().parents[1]  # the aimfair_cli package: "+dirty" looks at all of it
    if not any((p / ".git").exists() for p in (here, *here.parents)):
        return None
    try:
        run = lambda *args: subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True,  # noqa: E731
                                           timeout=5, check=True).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = run("status", "--porcelain", "--untracked-files=no", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def provenance(device: Any, inputs: Mapping[str, "str | os.PathLike | None"]) -> dict[str, Any]:
    """Versions, device, source commit and the path and SHA-256 of each input file that is given."""
    import torch
    import torchvision

    from .. import __version__

    return {
        "aimfair": __version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
        "device": str(device),
        "git_commit": git_commit(),
        "inputs": {flag: {"path": str(p), "sha256": sha256_file(p)}
                   for flag, p in inputs.items() if p is not None and Path(p).is_file()},
    }


def input_sha256(meta: Mapping[str, Any], flag: str) -> str | None:
    """The SHA-256 an output's metadata records for the input given as `flag`, if any."""
    entry = ((meta.get("provenance") or {}).get("inputs") or {}).get(flag)
    return entry.get("sha256") if isinstance(entry, dict) else None
