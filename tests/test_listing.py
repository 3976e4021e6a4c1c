"""Listing a disk tree whole or failing clearly: folders 1,100 deep, few open files, folders
without permission, and links that lead to the same folders many times over."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from polystore import DiskBackend

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX descriptors and permissions")


def _nested(root: Path, depth: int, *, siblings: bool = False) -> None:
    """``depth`` folders one inside the other (made by descriptor: the path passes PATH_MAX),
    a file at the bottom; ``siblings``: a second, empty folder beside each."""
    fd = os.open(root, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        if siblings:
            os.mkdir("e", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(os.open("deepest.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)


def test_a_tree_1100_folders_deep_is_listed_and_copied_whole(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    _nested(tmp_path / "tree", 1100)
    (tmp_path / "tree" / "top.txt").write_text("top")
    disk = DiskBackend(root=tmp_path)
    try:
        files = disk.list_files("tree", recursive=True)
        assert len(files) == 2 and files[0].endswith("/d/deepest.txt") and files[0].count("/") == 1101
        disk.copy("tree", "copy")
        assert len(disk.list_files("copy", recursive=True)) == 2
        disk.delete_all("copy")
        assert disk.list_dir(".") == ["tree"]
    finally:  # pytest removes its folders with shutil.rmtree, which stops at 1,000 levels
        disk.delete_all("tree")
        if disk.exists("copy"):
            disk.delete_all("copy")


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_a_chain_of_folders_holds_few_descriptors_and_running_out_is_our_error(tmp_path: Path) -> None:
    _nested(tmp_path, 200)  # a chain: the walk holds one folder open at a time
    (tmp_path / "wide").mkdir()
    _nested(tmp_path / "wide", 60, siblings=True)  # each level a folder still to walk: held open
    result = _run(
        """
        import os, resource
        from polystore import DiskBackend, PolystoreError
        disk = DiskBackend(root=".")
        disk.list_files(".", recursive=False)  # everything imported before the limit
        used = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 16
        resource.setrlimit(resource.RLIMIT_NOFILE, (used + 24, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        print("CHAIN", len(disk.list_files("d", recursive=True)))
        try:
            disk.list_files("wide", recursive=True)
        except PolystoreError as error:
            print("REFUSED", type(error).__name__, isinstance(error, OSError), error)
        """,
        tmp_path,
    )
    assert "CHAIN 1" in result.stdout, result.stdout + result.stderr
    assert "REFUSED StorageIOError True" in result.stdout and "too many files open" in result.stdout, (
        result.stdout + result.stderr
    )


def test_a_folder_without_permission_is_an_error_naming_it(tmp_path: Path) -> None:
    """Run as an unprivileged user (root reads every folder): a copy or a listing that cannot
    read a folder says so instead of leaving its files out."""
    # a folder of its own under /tmp: pytest's are private to the user running it
    base = Path(tempfile.mkdtemp(prefix="polystore-permissions-")) if os.geteuid() == 0 else tmp_path
    try:
        for folder in ("tree/open", "tree/locked"):
            (base / folder).mkdir(parents=True)
            (base / folder / "a.txt").write_text("a")
        drop = ""
        if os.geteuid() == 0:
            os.chmod(base, 0o755)
            for path in [base, *base.rglob("*")]:
                os.chown(path, 65534, 65534)
            drop = "os.setgroups([]); os.setgid(65534); os.setuid(65534)"
        os.chmod(base / "tree" / "locked", 0)
        result = _run(
            f"""
            import os
            from polystore import DiskBackend, PolystoreError, StoragePermissionError
            {drop}
            disk = DiskBackend(root=".")
            for operation in ("list_files", "copy"):
                try:
                    if operation == "list_files":
                        disk.list_files("tree", recursive=True)
                    else:
                        disk.copy("tree", "backup")
                    print(operation, "RETURNED")
                except StoragePermissionError as error:
                    print(operation, "REFUSED", isinstance(error, PermissionError), error)
            print("LISTED", disk.list_files("tree/open"))
            """,
            base,
        )
    finally:
        os.chmod(base / "tree" / "locked", 0o755)
        if base != tmp_path:
            shutil.rmtree(base)
    output = result.stdout + result.stderr
    assert "list_files REFUSED True [Errno 13] Cannot list 'tree/locked'" in output, output
    assert "copy REFUSED True [Errno 13] Cannot list 'tree/locked'" in output, output
    assert "LISTED ['tree/open/a.txt']" in output, output


def test_links_leading_to_the_same_folders_are_walked_once_each(tmp_path: Path) -> None:
    """40 folders, each holding two links to the next: 2**40 paths to the last one's file."""
    levels = 40
    for i in range(levels + 1):
        (tmp_path / f"d{i}").mkdir()
    for i in range(levels):
        (tmp_path / f"d{i}" / "x").symlink_to(f"../d{i + 1}", target_is_directory=True)
        (tmp_path / f"d{i}" / "y").symlink_to(f"../d{i + 1}", target_is_directory=True)
    (tmp_path / f"d{levels}" / "f.txt").write_text("f")
    result = _run(  # in a subprocess: a walk of every path would never end
        "from polystore import DiskBackend\n"
        "print('FILES', DiskBackend(root='.').list_files('d0', recursive=True))\n",
        tmp_path,
    )
    assert "FILES ['d0/" + "x/" * levels + "f.txt']" in result.stdout, result.stdout + result.stderr
