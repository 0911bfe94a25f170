"""torch.distributed helpers. Launched by `torchrun`, the env vars RANK/WORLD_SIZE/LOCAL_RANK are set;
without them everything runs in one process and these helpers are no-ops."""

from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def init(device_type: str) -> bool:
    """Start the process group once when launched by torchrun. Returns True if distributed."""
    if not is_distributed():
        return False
    import torch.distributed as td

    if not td.is_initialized():
        td.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return True


def barrier() -> None:
    if is_distributed():
        import torch.distributed as td

        if td.is_initialized():
            td.barrier()
