"""The files the desk's message editor may open, and how it writes one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from scheduler.messages.files import editable_path, template_files, tip_files, write_atomically


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A small messages folder: a part, a reason's template, a tip, and its README."""
    messages = tmp_path / "messages"
    (messages / "cadence_nudge").mkdir(parents=True)
    (messages / "tips").mkdir()
    (messages / "_footer.j2").write_text("{{ clinic.name }}\n", encoding="utf-8")
    (messages / "cadence_nudge" / "line.j2").write_text("こんにちは\n", encoding="utf-8")
    (messages / "tips" / "warm-drinks.md").write_text("---\n", encoding="utf-8")
    (messages / "tips" / "README.md").write_text("# tips\n", encoding="utf-8")
    (messages / "README.md").write_text("# messages\n", encoding="utf-8")
    return messages


def test_the_editor_lists_the_templates_and_the_tips_and_nothing_else(folder: Path) -> None:
    (folder / "cadence_nudge" / ".line.j2.swp").write_text("", encoding="utf-8")
    (folder / "tips" / "_draft.md").write_text("", encoding="utf-8")
    assert template_files(folder) == ["_footer.j2", "cadence_nudge/line.j2"]
    assert tip_files(folder) == ["tips/warm-drinks.md"]


@pytest.mark.parametrize(
    "name",
    [
        "../secret.j2",
        "cadence_nudge/../../secret.j2",
        "/etc/passwd",
        "README.md",
        "tips/README.md",
        "tips/_draft.md",
        "cadence_nudge",
        "cadence_nudge/email.j2",  # not there: the editor makes no new files
    ],
)
def test_a_name_the_folder_does_not_list_opens_nothing(folder: Path, name: str) -> None:
    (folder.parent / "secret.j2").write_text("", encoding="utf-8")
    assert editable_path(folder, name) is None


def test_a_link_to_a_file_outside_the_folder_opens_nothing(folder: Path) -> None:
    outside = folder.parent / "outside.j2"
    outside.write_text("", encoding="utf-8")
    (folder / "cadence_nudge" / "email.j2").symlink_to(outside)
    assert editable_path(folder, "cadence_nudge/email.j2") is None
    assert "cadence_nudge/email.j2" not in template_files(folder)


def test_a_listed_file_opens(folder: Path) -> None:
    assert editable_path(folder, "tips/warm-drinks.md") == folder / "tips" / "warm-drinks.md"


def test_writing_replaces_the_file_and_leaves_no_temporary_file(folder: Path) -> None:
    path = folder / "cadence_nudge" / "line.j2"
    os.chmod(path, 0o640)
    write_atomically(path, "こんばんは\n")
    assert path.read_text(encoding="utf-8") == "こんばんは\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # as the practitioner had it
    assert sorted(p.name for p in path.parent.iterdir()) == ["line.j2"]


def test_a_write_that_fails_leaves_the_old_file_whole(folder: Path) -> None:
    path = folder / "cadence_nudge" / "line.j2"
    with pytest.raises(UnicodeEncodeError):
        write_atomically(path, "half\ud800")  # a lone surrogate: no UTF-8 for it
    assert path.read_text(encoding="utf-8") == "こんにちは\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["line.j2"]


def test_a_written_file_is_newer_than_the_one_it_replaced(folder: Path) -> None:
    path = folder / "cadence_nudge" / "line.j2"
    ahead = path.stat().st_mtime_ns + 10 * 10**9  # as a coarse or skewed clock leaves it
    os.utime(path, ns=(ahead, ahead))
    write_atomically(path, "こんばんは\n")
    assert path.stat().st_mtime_ns > ahead  # so the worker's renderer reads it again
