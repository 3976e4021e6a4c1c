"""atomic_update_json meets a file it cannot read: our error, naming the file, the file kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from polystore.atomic import atomic_update_json
from polystore.exceptions import CorruptDataError, IsADirectoryStorageError


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
