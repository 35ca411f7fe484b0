"""A pre-launch check that passed, told to the processes started after it so they do not repeat it.

``flashdist.Trainer.fit`` checks a run before any other process starts (``check_fit_before_launch``,
runtime/trainer.py), and ``flashdist launch -- flashdist fit ...`` runs the same checks in a
process of its own before torchrun (cli/launch.py). The processes started next (ranks 1.. by
Lightning's own launcher; every worker of torchrun) ran the same checks again, each paying for
them before its first step. Now the process that checked puts a digest of the command it
checked in their environment (:data:`CHECKED_ENV`), and a process whose own command has that
digest skips the checks, once (the marker is taken: a script's second ``fit`` checks again).
A process with another command (a config file changed, other flags, another script) checks as
before. The digest covers the command's words, the bytes of every file a word names (the config
files, the script) and the working directory, so "the same command" means the same config.

Example:
    >>> environ = {}
    >>> mark_checked(environ, ["flashdist", "fit", "--trainer.max_epochs=1"])
    >>> take_checked(environ, ["flashdist", "fit", "--trainer.max_epochs=2"]), CHECKED_ENV in environ
    (False, False)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path

CHECKED_ENV = "FLASHDIST_CHECKED_COMMAND"
_MAX_FILE_BYTES = 16 * 2**20  # a word naming a bigger file (a data set) counts by its size and time, not its bytes

_command: tuple[str, ...] | None = None


def command_digest(words: Sequence[str]) -> str:
    """A digest of ``words``, of what each word that names a file holds, and of the working directory.

    Example:
        >>> command_digest(["flashdist", "fit"]) == command_digest(["flashdist", "fit"]) != command_digest(["flashdist", "validate"])
        True
    """
    digest = hashlib.sha256(os.getcwd().encode() + b"\0")
    for word in words:
        digest.update(word.encode() + b"\0")
        for path in _files_named(word):
            size = path.stat().st_size
            digest.update(path.read_bytes() if size <= _MAX_FILE_BYTES else f"{size}:{path.stat().st_mtime_ns}".encode())
            digest.update(b"\0")
    return digest.hexdigest()


def this_command() -> list[str]:
    """This process's command as a check names it: the ``flashdist`` command it runs, else its script and arguments.

    Example:
        >>> with running_command(["flashdist", "fit", "--config", "run.yaml"]):
        ...     this_command()
        ['flashdist', 'fit', '--config', 'run.yaml']
    """
    if _command is not None:
        return list(_command)
    return [os.path.abspath(sys.argv[0]), *sys.argv[1:]] if sys.argv and sys.argv[0] else list(sys.argv)


@contextlib.contextmanager
def running_command(words: Sequence[str]) -> Iterator[None]:
    """Name this process's command for :func:`this_command` while it runs (``flashdist fit``: however it was started)."""
    global _command
    previous, _command = _command, tuple(words)
    try:
        yield
    finally:
        _command = previous


def mark_checked(environ: MutableMapping[str, str], command: Sequence[str]) -> None:
    """Tell the processes started with ``environ`` that ``command`` passed its pre-launch checks."""
    environ[CHECKED_ENV] = command_digest(command)


def take_checked(environ: MutableMapping[str, str], command: Sequence[str]) -> bool:
    """Whether a process before this one checked ``command``; the marker is removed either way.

    Example:
        >>> environ = {}
        >>> mark_checked(environ, ["train.py"])
        >>> take_checked(environ, ["train.py"]), take_checked(environ, ["train.py"])
        (True, False)
    """
    marker = environ.pop(CHECKED_ENV, None)
    return marker is not None and marker == command_digest(command)


def was_checked(environ: MutableMapping[str, str], command: Sequence[str]) -> bool:
    """:func:`take_checked` without taking the marker (for a check that comes before the one that takes it)."""
    marker = environ.get(CHECKED_ENV)
    return marker is not None and marker == command_digest(command)


@contextlib.contextmanager
def checked_for_children(environ: MutableMapping[str, str], command: Sequence[str]) -> Iterator[None]:
    """Mark ``command`` checked while the block runs (the ranks Lightning's launcher starts in it inherit the mark)."""
    mark_checked(environ, command)
    try:
        yield
    finally:
        environ.pop(CHECKED_ENV, None)


def _files_named(word: str) -> list[Path]:
    """The files ``word`` names: itself, or the value of ``--key=value``."""
    candidates = [word] + ([word.split("=", 1)[1]] if word.startswith("-") and "=" in word else [])
    found = []
    for candidate in candidates:
        if not candidate or "\0" in candidate or len(candidate) > 4096:
            continue
        try:
            path = Path(candidate)
            if path.is_file():
                found.append(path)
        except OSError:  # a name too long for the file system, a directory without access
            continue
    return found


__all__ = ["CHECKED_ENV", "checked_for_children", "command_digest", "mark_checked", "running_command", "take_checked",
           "this_command", "was_checked"]
