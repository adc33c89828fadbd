"""One run per output folder: a lock file that a second run on the same folder is refused by, naming the holder.

Two runs writing into one folder mix silently: each stage's files are atomic, but models from one run's settings
end up beside run.json and results.json from the other's (seen: 13 of 21 models). `RunLock(folder)` makes the
folder one run's for the run's lifetime:

    with RunLock(out):          # BadInputError (exit 2) if another live process holds it
        ...                     # write freely

The lock is the file FOLDER/run.lock, holding JSON: pid, host, start time and command line of the holder.

* Exclusion comes from the kernel: the holder keeps an exclusive `flock` on the file while it runs. The kernel
  drops that lock the moment the process dies, however it dies (kill -9, OOM, power loss of a local disk), so
  a lock left by a killed process is stale by construction: the next run's `flock` succeeds, it reads the dead
  holder's record (to say what it took over), rewrites it with its own, and carries on. Take-over needs no
  second protocol and has no race: two processes cannot both hold the `flock`.
* Creation is atomic (O_CREAT on one name, then the flock decides). A holder removes the file before it lets go
  of the lock; a process that opened the file just before that removal gets the flock of a file no longer in
  the folder, notices (the name now points to another inode, or to nothing) and tries again.
* Where the file system has no flock (some network mounts; ENOLCK/EOPNOTSUPP), the file alone decides: it is
  created with O_EXCL and a lock is stale when its pid is dead on this host. Taking over such a stale lock renames
  it aside first (an atomic rename: of two racing processes exactly one moves it) and checks that what it moved
  is the stale record it read, before creating its own. That fallback is best effort: three processes racing
  over one stale lock in the same millisecond can still both win; with flock nothing can.

The flock is per open file description, so a second `RunLock` on the same folder inside one process is refused
too. Under torchrun only rank 0 takes the lock (pipeline.reproduce).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import BadInputError

LOCK_NAME = "run.lock"

try:  # POSIX; elsewhere the O_EXCL fallback is used
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class RunLockedError(BadInputError):
    """Another live run holds the folder."""


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 checks without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe(record: dict | None, path: Path) -> str:
    if not record:
        return f"a process that is starting (its {path} is still empty)"
    who = f"pid {record.get('pid', '?')} on {record.get('host', '?')}"
    since = record.get("started")
    command = record.get("command")
    text = who + (f", running since {since}" if since else "") + (f" ({command})" if command else "")
    pid = record.get("pid")
    if record.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        # the flock is held, yet the recorded pid is gone: a process is taking over this stale record right now,
        # or a child forked by the dead holder still has the file open
        text += f"; pid {pid} is no longer running, so another run is taking over or a child of it holds the lock"
    return text


def _command_line() -> str:
    """What the holder was started as, for the refusal message (`advfeatures reproduce --out ...`)."""
    argv = list(sys.argv) or ["python"]
    name = Path(argv[0]).name
    argv[0] = "advfeatures" if name in ("__main__.py", "advfeatures") else name
    return " ".join(argv)[:300]


def _read_record(path: Path) -> dict | None:
    try:
        text = path.read_text()
        record = json.loads(text) if text.strip() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


class RunLock:
    """An exclusive lock on an output folder for one run (a context manager; also `acquire()` / `release()`).

    `taken_over` is the record of the dead holder whose stale lock this one replaced (None if the folder was
    free), so the caller can say so.
    """

    def __init__(self, folder: str | os.PathLike, command: str | None = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command if command is not None else _command_line()
        self.taken_over: dict | None = None
        self._fd: int | None = None
        self._flock = fcntl is not None

    # -- the record
    def _record(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": self.command}

    def _refuse(self, record: dict | None) -> RunLockedError:
        return RunLockedError(
            f"{self.folder} is in use by another run: {_describe(record, self.path)}; wait for it to finish, stop "
            f"it, or use another --out (if no such process is running, delete {self.path})"
        )

    # -- acquire / release
    def acquire(self) -> RunLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this RunLock")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise BadInputError(f"{self.folder}: cannot create the folder ({err.strerror}); "
                                "choose another --out") from err
        for _ in range(100):  # retries only when the holder removed the file between our open and our flock
            if self._try_flock() if self._flock else self._try_exclusive():
                return self
        raise RunLockedError(f"{self.path}: could not take the lock (the file kept changing); try again")

    def _open(self, flags: int) -> int:
        nofollow = getattr(os, "O_NOFOLLOW", 0)  # a planted symlink must not redirect our writes
        try:
            return os.open(self.path, flags | nofollow | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise BadInputError(f"{self.path} is a symbolic link; remove it (a run lock is a plain file)") from err
            if err.errno == errno.EEXIST:
                raise
            raise BadInputError(f"{self.path}: cannot create the run lock ({err.strerror}); "
                                "choose a writable --out") from err

    def _try_flock(self) -> bool:
        fd = self._open(os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._refuse(_read_record(self.path)) from None
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                self._flock = False  # this file system has no flock: the O_EXCL protocol decides
                return False
            raise
        try:
            if os.fstat(fd).st_ino != os.stat(self.path, follow_symlinks=False).st_ino:
                raise FileNotFoundError  # the holder removed (and maybe someone recreated) the file meanwhile
        except FileNotFoundError:
            os.close(fd)
            return False
        previous = _read_record(self.path)
        self.taken_over = previous  # a record under a free flock: its writer died without removing it
        self._write(fd)
        self._fd = fd
        return True

    def _try_exclusive(self) -> bool:
        try:
            fd = self._open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            record = _read_record(self.path)
            if not self._stale(record):
                raise self._refuse(record) from None
            self._break(record)
            return False
        self._write(fd)
        self._fd = fd
        return True

    def _stale(self, record: dict | None) -> bool:
        """Without flock: stale when the record names a dead pid on this host. An empty or unreadable record
        is a holder still writing it, unless the file is older than a minute (its writer died mid-write)."""
        if record is None:
            try:
                age = _dt.datetime.now().timestamp() - self.path.stat().st_mtime
            except FileNotFoundError:
                return True
            return age > 60
        if record.get("host") != socket.gethostname():
            return False  # another machine's process: we cannot see whether it lives
        pid = record.get("pid")
        return isinstance(pid, int) and not _pid_alive(pid)

    def _break(self, record: dict | None) -> None:
        """Move a stale lock aside atomically; if what moved is not the record judged stale (another process took
        over in between), put it back where it was."""
        aside = self.path.with_name(f".{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another process moved it first; retry from the start
        if _read_record(aside) != record:
            with contextlib.suppress(OSError):  # fails if a third process already made a new lock: then it holds
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        self.taken_over = record

    def _write(self, fd: int) -> None:
        data = (json.dumps(self._record()) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def release(self) -> None:
        """Remove the file, then let go of the lock (in that order: see the module docstring)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_record(folder: str | os.PathLike) -> dict | None:
    """The record in FOLDER/run.lock (who holds it or held it last), or None."""
    return _read_record(Path(folder) / LOCK_NAME)


@contextmanager
def run_folder_lock(
    folder: str | os.PathLike, group=None, log: Callable[[str], None] | None = None,
    recheck: Callable[[], None] | None = None, clean: bool = True,
) -> Iterator[RunLock | None]:
    """Hold FOLDER/run.lock for a whole run; under it, `recheck()` and (with `clean`) the removal of orphaned
    temporary files. Pass clean=False for a folder not known to be ours alone (`theory --out ~/somewhere`): the
    clean-up walks the whole tree.

    `recheck` re-runs the folder checks made before the lock was held (another run may have written run.json in
    between). With a torchrun `group`, rank 0 alone takes the lock and every rank learns whether it did, so
    all ranks fail together instead of the others waiting forever at the next barrier.
    """
    from .io import remove_orphaned_temporaries

    main = group is None or group.is_main
    lock = RunLock(folder) if main else None
    error: BaseException | None = None
    if lock is not None:
        try:
            lock.acquire()
            if recheck is not None:
                recheck()
        except Exception as err:  # noqa: BLE001 - every rank must hear about any failure here
            lock.release()
            error = err
    agreed = error is None if group is None else group.all_agree(error is None)
    if not agreed:
        raise error if error is not None else BadInputError(
            f"{Path(folder)}: rank 0 could not take the run lock (its message says why)")
    try:
        if lock is not None:
            if lock.taken_over and log is not None:
                dead = lock.taken_over
                log(f"took over the stale run lock of pid {dead.get('pid', '?')} on {dead.get('host', '?')} "
                    f"(started {dead.get('started', '?')}), which is no longer running")
            removed = remove_orphaned_temporaries(folder) if clean else []
            if removed and log is not None:
                log(f"removed {len(removed)} temporary file(s) left by an interrupted run")
        yield lock
    finally:
        if lock is not None:
            lock.release()


__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "lock_record", "run_folder_lock"]
