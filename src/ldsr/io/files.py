"""Files: the `ImageError` of every I/O problem, atomic writes (`atomic_path`) and readability checks."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ImageError(ValueError):
    """A problem with one input or output file; the message is '<path>: <reason>'."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


_UMASK_LOCK = threading.Lock()


def _current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status).

    Elsewhere it is set to 0 and restored at once, under a lock so that two readers cannot interleave
    (another thread creating a file inside that instant would still see umask 0).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0)
        try:
            return mask
        finally:
            os.umask(mask)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, on failure delete it.

    The final file gets the permissions a plain `open(path, "w")` would give (0o666 minus the umask), not
    mkstemp's private 0o600.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file() and not tmp_path.is_symlink():
            os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _one_line(err: BaseException, path: Path | None = None) -> str:
    """An exception's text on one line, without the file path (the ImageError prefix already has it)."""
    text = str(err) or type(err).__name__
    if path is not None:
        for p in (repr(str(path)), str(path)):
            text = text.replace(p, "")
    text = " ".join(text.replace("''", "").split())
    return text[:200] or type(err).__name__


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise ImageError(path, "file not found")
    if path.is_dir():
        raise ImageError(path, "is a directory, not an image file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageError(path, f"cannot read file ({_one_line(e, path)})") from e
    if size == 0:
        raise ImageError(path, "empty file")
