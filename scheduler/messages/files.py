"""The practitioner's files in a clinic's messages folder, as the desk's editor sees
them: which files it may open (message templates `*.j2` and the tips of `tips/`,
nothing else), and writing one so that no reader ever sees half of it.

A name comes from a URL, so it is checked against the files that are there rather
than trusted: a name the folder does not list (`../config/tayori.toml`, a file of
another type, a link out of the folder) opens nothing.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from scheduler.messages.tips import is_tip_file

TEMPLATE_SUFFIX = ".j2"
TIPS = "tips"


def template_files(directory: Path) -> list[str]:
    """The message templates of the folder, as paths relative to it (`_footer.j2`,
    `cadence_nudge/line.j2`), sorted."""
    if not directory.is_dir():
        return []
    return sorted(
        path.relative_to(directory).as_posix()
        for path in directory.rglob(f"*{TEMPLATE_SUFFIX}")
        if _inside(directory, path)
    )


def tip_files(directory: Path) -> list[str]:
    """The tip files of the folder's tip library (`tips/<id>.md`), sorted."""
    tips = directory / TIPS
    if not tips.is_dir():
        return []
    return sorted(
        f"{TIPS}/{path.name}"
        for path in tips.iterdir()
        if is_tip_file(path) and _inside(directory, path)
    )


def editable_path(directory: Path, name: str) -> Path | None:
    """The file `name` (relative to the folder) if the editor may open it: one of the
    folder's templates or tips; None for anything else."""
    if name in template_files(directory) or name in tip_files(directory):
        return directory / name
    return None


def is_tip(name: str) -> bool:
    return name.startswith(f"{TIPS}/")


def _inside(directory: Path, path: Path) -> bool:
    """A regular file, no link, no hidden part, and really inside the folder."""
    relative = path.relative_to(directory)
    if any(part.startswith(".") for part in relative.parts):
        return False  # an editor's swap file, or a save of ours under way
    if path.is_symlink() or not path.is_file():
        return False
    return path.resolve().is_relative_to(directory.resolve())


def write_atomically(path: Path, text: str) -> None:
    """Replace the file at `path` with `text` (UTF-8) in one step: readers (the
    worker's renderer, the tip library) see the old file or the new one, never a
    part of it. The text goes to a hidden temporary file in the same folder (so the
    rename stays on one file system), is flushed to disk, then renamed over it."""
    before = path.stat() if path.exists() else None
    mode = stat.S_IMODE(before.st_mode) if before else 0o644
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".saving"
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        if before is not None and os.stat(temporary).st_mtime_ns <= before.st_mtime_ns:
            # Readers notice a change by the file's time (Jinja's auto_reload, the tip
            # library): on a file system with a coarse clock, a second save within
            # the same tick would otherwise look like no change at all.
            later = before.st_mtime_ns + 10**9
            os.utime(temporary, ns=(later, later))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
