"""torch.distributed for every stage. Launched by `torchrun`, the env vars RANK/WORLD_SIZE/LOCAL_RANK are set;
without them everything runs in one process and these helpers are no-ops.

Under torchrun the process group is started once (`init`, called by the CLI before a command runs and by any
helper here that needs it): gloo for CPU tensors, plus NCCL for CUDA tensors when the machine has GPUs, so the
same code runs on both. Each rank computes on `cuda:LOCAL_RANK` (`models.resolve_device`).

How a failure on one rank ends the job (and why this way):
- Errors that every rank meets alike (bad options, a missing manifest, a bad image found by the sharded
  pre-flight check, which all ranks agree on) are raised on every rank. Errors that only one rank meets (an image
  that only its shard decodes, a full disk on rank 0) are raised on that rank alone, while the others may be
  waiting in a collective that will never complete.
- Whichever rank fails first claims the failure in torchrun's key-value store (`compare_set`, atomic): only that
  rank prints the `Error:` line (`claim_failure`); a rank that fails later exits 1 without a word.
- A watcher thread on every rank polls that key and ends its process with exit status 1 as soon as another rank
  has claimed it. This is what bounds the time: a rank blocked in a gloo or NCCL collective, or at a barrier
  (possibly on another node), cannot notice a dead peer by itself, and a short collective timeout would also
  kill healthy long waits (a synth rank that finishes hours before the others after a resume). torchrun also
  stops the remaining local ranks when one exits non-zero; the watcher covers the other nodes and launchers that
  do not. The process group's own timeout (torch's default) stays the last resort.
- Barriers (`barrier`) go through the same store rather than the process group: they wait as long as the work
  takes, involve no device, and return early with `PeerFailed` when another rank has claimed a failure.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, Iterator

from .errors import UsageError

WATCH_INTERVAL_S = 0.5  # how often the watcher looks for another rank's failure
EXIT_GRACE_S = 2.0  # how long a healthy rank lets the failed one exit before it exits too
STORE_TIMEOUT_S = 60  # connecting to torchrun's store

MSG_BATCH_SPLIT = (
    "--batch-size {batch} is the batch of all {world} processes together and must be a multiple of {world}"
)

_state: dict[str, Any] = {"store": None, "watcher": None, "stop": None, "barriers": 0, "reporter": None}


class PeerFailed(Exception):
    """Another rank of this torchrun job failed first (and reports the error); this rank stops quietly."""


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


def _key(name: str) -> str:
    # keys of a restarted job (torchrun --max-restarts) must not see the failure of the attempt before
    run = os.environ.get("TORCHELASTIC_RUN_ID", "run")
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return f"aimfair/{run}/{attempt}/{name}"


def _connect() -> Any:
    """A client of the store torchrun serves at MASTER_ADDR:MASTER_PORT (the one the process group uses)."""
    from datetime import timedelta

    import torch.distributed as td

    return td.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                       timeout=timedelta(seconds=STORE_TIMEOUT_S))


def _watch(store: Any, stop: threading.Event) -> None:
    key, me = _key("failed"), str(rank()).encode()
    while not stop.wait(WATCH_INTERVAL_S):
        try:
            if store.check([key]) and store.get(key) != me:
                # another rank failed and prints the error. A short grace lets it exit first, so torchrun's
                # report names it as the root cause; then this rank ends, whatever collective it is stuck in.
                time.sleep(EXIT_GRACE_S)
                os._exit(1)
        except Exception:
            return  # the store is gone: the launcher is ending the job anyway


def init(device_type: str | None = None) -> bool:
    """Start the process group (and the failure watcher) once when launched by torchrun; True if distributed.

    `device_type` is accepted for callers that know it; the backend does not depend on it (gloo serves CPU
    tensors, NCCL CUDA tensors)."""
    if not is_distributed():
        return False
    import torch
    import torch.distributed as td

    if not td.is_initialized():
        cuda = torch.cuda.is_available() and td.is_nccl_available()
        if cuda and local_rank() < torch.cuda.device_count():
            torch.cuda.set_device(local_rank())  # NCCL binds each rank to its own GPU
        td.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
    if _state["store"] is None and "MASTER_ADDR" in os.environ:
        _state["store"] = _connect()
        _state["stop"] = threading.Event()
        # its own connection: the main thread's store calls must not interleave with the watcher's
        _state["watcher"] = threading.Thread(target=_watch, args=(_connect(), _state["stop"]), daemon=True,
                                             name="aimfair-peer-watch")
        _state["watcher"].start()
    return True


def shutdown() -> None:
    """After a successful command: stop the watcher and end the process group."""
    if _state["stop"] is not None:
        _state["stop"].set()
        _state["watcher"].join()
    _state.update(store=None, watcher=None, stop=None, barriers=0, reporter=None)
    if is_distributed():
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()


def claim_failure() -> bool:
    """Record that this rank failed. True when it is the first rank of the job to fail (it reports the error);
    outside torchrun always True."""
    if _state["reporter"] is not None:
        return _state["reporter"]
    store = _state["store"]
    if not is_distributed() or store is None:
        won = not is_distributed() or is_main()
    else:
        me = str(rank())
        try:
            won = store.compare_set(_key("failed"), "", me).decode() == me
        except Exception:
            won = is_main()  # no store: fall back to "rank 0 speaks"
    _state["reporter"] = won
    return won


@contextlib.contextmanager
def session() -> Iterator[None]:
    """Run one command: start the process group under torchrun; on success end it, on failure claim it.

    On failure the group is left as it is (the process exits next): tearing it down while peers still wait
    in a collective can block."""
    init()
    try:
        yield
    except BaseException as exc:
        if not (isinstance(exc, SystemExit) and not exc.code):
            claim_failure()
        raise
    shutdown()


def barrier() -> None:
    """Wait until every rank gets here (no-op in one process). Through torchrun's store: no device, no time
    limit; raises PeerFailed if another rank has failed meanwhile."""
    if not init() or _state["store"] is None:
        return
    store = _state["store"]
    _state["barriers"] += 1
    key, failed = _key(f"barrier/{_state['barriers']}"), _key("failed")
    if store.add(key, 1) == world_size():
        store.set(f"{key}/done", "1")
    pause = 0.01
    while not store.check([f"{key}/done"]):
        if store.check([failed]):
            raise PeerFailed()
        time.sleep(pause)
        pause = min(pause * 2, WATCH_INTERVAL_S)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order ([obj] in one process)."""
    if not init():
        return [obj]
    import torch.distributed as td

    everyone: list[Any] = [None] * world_size()
    td.all_gather_object(everyone, obj)
    return everyone


def all_reduce_sum(tensor: Any) -> Any:
    """Sum `tensor` over ranks in place (no-op in one process); returns it."""
    if init():
        import torch.distributed as td

        td.all_reduce(tensor)
    return tensor


def local_batch(batch_size: int) -> int:
    """This rank's share of a global batch: `--batch-size` means the batch of all processes together, so the
    learning rate and the mask's batches mean the same whatever the number of processes."""
    world = world_size()
    if batch_size % world:
        raise UsageError(MSG_BATCH_SPLIT.format(batch=batch_size, world=world))
    return batch_size // world
