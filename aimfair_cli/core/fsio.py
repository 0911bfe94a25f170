"""Safe outputs: atomic writes (a failed or interrupted command never leaves a half-written output), and the
checks every stage runs before any work: no output is one of the inputs, fixed formats have their suffix, and
every destination can be written (so a long training run never dies at its final save)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator, Mapping, Sequence

from .errors import OutputError, WriteError

MSG_SAME_AS_INPUT = "{out_label} {output} is the same file as {in_label} {input}; refusing to overwrite an input"
MSG_TWO_OUTPUTS = "{a} and {b} are the same file {path}; give each output its own path"
MSG_BAD_SUFFIX = "{label} must end in {suffixes}; got {path}"
MSG_IS_FOLDER = "cannot write {path}: it is a folder"
MSG_NOT_FOLDER = "cannot write {path}: {parent} is a file, not a folder"
MSG_CANNOT_WRITE = "cannot write {path}: {reason}"  # reason: the system's words (Permission denied, ...)
MSG_NOT_UTF8 = "{path}: not UTF-8 text (save the file as UTF-8)"

# errno values that mean "this destination cannot take the file" rather than a bug in the caller
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG, errno.EIO}
_OS_ERROR = re.compile(r"os error (\d+)")  # how Rust-backed writers (safetensors) report an OSError


def _reason(exc: BaseException) -> int | None:
    """The errno of a failed write, from an OSError or a Rust writer's message; None for anything else."""
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if code is None and not isinstance(exc, OSError):
        m = _OS_ERROR.search(str(exc))
        code = int(m.group(1)) if m else None
    return code if code in _WRITE_ERRNOS else None


@contextlib.contextmanager
def write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn a disk-full / permission / read-only / file-too-large error inside the block into one WriteError line."""
    try:
        yield
    except (WriteError, OutputError):
        raise
    except Exception as exc:
        code = _reason(exc)
        if code is None:
            raise
        raise WriteError(MSG_CANNOT_WRITE.format(path=path, reason=os.strerror(code))) from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    Use it for writers that want a file name (safetensors, PIL): `with atomic_path(out) as tmp: save(tmp)`.
    A write that fails for lack of space or permission raises WriteError (one line naming `path`).
    """
    path = Path(path)
    with write_errors(path):
        if path.parent.exists() and not path.parent.is_dir():
            raise OutputError(MSG_NOT_FOLDER.format(path=path, parent=path.parent))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            # mkstemp creates 0600 files; give the output the permissions a plain open() would have.
            os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, path)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; it becomes `path` only if the block succeeds."""
    if "newline" not in kwargs and "b" not in mode:
        kwargs["newline"] = ""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def read_utf8(path: str | os.PathLike, error: type[Exception]) -> str:
    """The text of `path`; bytes that are not UTF-8 raise `error` with MSG_NOT_UTF8 instead of a traceback."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(MSG_NOT_UTF8.format(path=path)) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


# ---- checks before any work -------------------------------------------------------------------------------


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when `a` and `b` name one file: the same real path (symlinks and `./x/../x` resolved) or, for files
    that exist, the same inode (hard links)."""
    try:
        if os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _as_list(value: "str | os.PathLike | Iterable | None") -> list:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return [v for v in value if v is not None]


def refuse_inputs(outputs: Mapping[str, "str | os.PathLike | None"],
                  inputs: Mapping[str, "str | os.PathLike | Sequence | None"]) -> None:
    """Raise OutputError if an output resolves to one of the inputs. Keys are how the user names each path
    (`--out`, `--model`, `the resolved config`); an input may be a list of paths (several checkpoints)."""
    for out_label, output in outputs.items():
        if output is None:
            continue
        for in_label, value in inputs.items():
            for inp in _as_list(value):
                if same_file(output, inp):
                    raise OutputError(MSG_SAME_AS_INPUT.format(out_label=out_label, output=output,
                                                               in_label=in_label, input=inp))


def check_suffix(path: str | os.PathLike, suffixes: Sequence[str], label: str) -> None:
    """Raise OutputError unless `path` ends in one of `suffixes` (case-insensitive), e.g. ('.safetensors',)."""
    if Path(path).suffix.lower() not in suffixes:
        raise OutputError(MSG_BAD_SUFFIX.format(label=label, suffixes=" or ".join(suffixes), path=path))


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Raise OutputError unless `path` (a file, or with `folder=True` a folder) can be created or replaced.

    Nothing is created: the nearest existing folder on the way to `path` must be a folder in which a
    temporary file can be made (and is removed at once). That finds a read-only folder, a parent that is a
    file and a full or read-only file system before hours of work, not at the final save.
    """
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise OutputError(MSG_NOT_FOLDER.format(path=path, parent=path))
        probe_from = path
    else:
        if path.is_dir():
            raise OutputError(MSG_IS_FOLDER.format(path=path))
        probe_from = path.parent
    existing = probe_from
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(MSG_NOT_FOLDER.format(path=path, parent=existing))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".aimfair-write-check.", suffix=".tmp", dir=existing or ".")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OutputError(MSG_CANNOT_WRITE.format(path=path, reason=reason)) from None


# Outputs every command writes besides its own (the --log-file): set by the CLI, checked by every stage's
# check_outputs against that stage's inputs; `on_checked` runs once they pass (the log file starts writing then).
_common_outputs: dict[str, "str | os.PathLike"] = {}
_on_checked: list = []
_on_refused: list = []


def add_common_output(label: str, path: "str | os.PathLike", on_checked=None, on_refused=None) -> None:
    """Register an output that every stage's check_outputs compares with its inputs (`--log-file`);
    `on_refused` runs when that output itself is refused (nothing may then be written to it)."""
    _common_outputs[label] = path
    if on_checked is not None:
        _on_checked.append(on_checked)
    if on_refused is not None:
        _on_refused.append(on_refused)


def refuse_common(exc: OutputError) -> None:
    """Tell the common outputs named in `exc` that they were refused."""
    if any(str(exc).startswith(label) or f" {label} " in str(exc) for label in _common_outputs):
        for callback in _on_refused:
            callback()


def clear_common_outputs() -> None:
    _common_outputs.clear()
    _on_checked.clear()
    _on_refused.clear()


def check_outputs(outputs: Mapping[str, "str | os.PathLike | None"],
                  inputs: Mapping[str, "str | os.PathLike | Sequence | None"] = {}, *,
                  folders: Mapping[str, "str | os.PathLike | None"] = {}) -> None:
    """Every check a stage runs before any work: no output file (nor folder) is an input, no two outputs are
    one file, and every output file and folder can be written."""
    try:
        refuse_inputs({**outputs, **folders, **_common_outputs}, inputs)
        named = [(k, v) for k, v in {**outputs, **_common_outputs}.items() if v is not None]
        for i, (label_a, a) in enumerate(named):
            for label_b, b in named[i + 1:]:
                if same_file(a, b):
                    raise OutputError(MSG_TWO_OUTPUTS.format(a=label_a, b=label_b, path=b))
    except OutputError as exc:
        refuse_common(exc)
        raise
    while _on_checked:
        _on_checked.pop(0)()
    for output in folders.values():  # first: a folder that cannot be made is the clearer message
        if output is not None:
            check_writable(output, folder=True)
    for output in outputs.values():
        if output is not None:
            check_writable(output)
