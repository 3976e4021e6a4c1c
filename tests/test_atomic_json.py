"""The atomic helpers meet what they cannot read or write: our error, naming the file, nothing
left behind and nothing changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from polystore.atomic import (
    TEMP_SUFFIX,
    atomic_update_json,
    atomic_write,
    atomic_write_json,
    sweep_stale_temp_files,
)
from polystore.exceptions import (
    CorruptDataError,
    IsADirectoryStorageError,
    NotADirectoryStorageError,
    StorageFileNotFoundError,
)


def test_a_damaged_json_file_is_our_error_and_is_left_as_it_was(tmp_path: Path) -> None:
    # json's bare JSONDecodeError reached the caller, without the file's name
    target = tmp_path / "counts.json"
    target.write_text('{"n": 1', encoding="utf-8")
    with pytest.raises(CorruptDataError, match=r"counts\.json") as caught:
        atomic_update_json(target, lambda data: {"n": 2})
    assert isinstance(caught.value, ValueError)
    assert target.read_text(encoding="utf-8") == '{"n": 1'


def test_a_folder_in_place_of_the_json_file_is_our_error(tmp_path: Path) -> None:
    (tmp_path / "counts.json").mkdir()
    with pytest.raises(IsADirectoryStorageError, match=r"counts\.json"):
        atomic_update_json(tmp_path / "counts.json", lambda data: {"n": 2})


def test_atomic_writes_where_a_file_or_folder_is_in_the_way_are_our_errors(tmp_path: Path) -> None:
    # the OS's bare FileExistsError / IsADirectoryError reached the caller, the second naming
    # the hidden temporary file
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    (tmp_path / "folder").mkdir()
    with pytest.raises(NotADirectoryStorageError, match=r"afile"):
        atomic_write_json({}, tmp_path / "afile" / "x.json")
    with pytest.raises(NotADirectoryStorageError, match=r"afile"), atomic_write(tmp_path / "afile" / "x.txt"):
        pass
    with pytest.raises(IsADirectoryStorageError, match=r"'[^']*folder'") as caught:
        atomic_write_json({}, tmp_path / "folder")
    assert TEMP_SUFFIX not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder"], "a temporary file was left"


def test_sweeping_a_folder_that_is_not_there_is_our_error(tmp_path: Path) -> None:
    # os.scandir's bare FileNotFoundError / NotADirectoryError reached the caller (and the CLI)
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    with pytest.raises(StorageFileNotFoundError, match="missing"):
        sweep_stale_temp_files(tmp_path / "missing")
    with pytest.raises(NotADirectoryStorageError, match="afile"):
        sweep_stale_temp_files(tmp_path / "afile")
