"""A rooted DiskBackend stays inside its root: symbolic links, loops, FIFOs, and a folder swapped
for a link while real processes save into it.

The rule under test (docs/security.md): a link inside the root is followed only while it leads
to somewhere inside the root; one leading out raises PathEscapeError; ``delete`` and ``move``
act on a link itself; listings leave out links that lead out, nowhere, or round in circles.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from polystore import DiskBackend, FileManager, InvalidPathError, PathEscapeError, PolystoreError
from polystore.exceptions import SymlinkLoopError, UnsupportedFormatError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX symbolic links and dir_fd")
Places = tuple[DiskBackend, Path, Path]


@pytest.fixture
def places(tmp_path: Path) -> Places:
    """A backend rooted at ``root``, and a folder ``outside`` beside it holding a secret."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    np.save(outside / "secret.npy", np.arange(3))
    (outside / "secret.txt").write_text("secret")
    return DiskBackend(root=root), root, outside


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


# -- links leading out ------------------------------------------------------------------------


def test_copy_of_a_link_leading_out_is_refused_and_copies_nothing(places: Places) -> None:
    disk, root, outside = places
    (root / "a.npy").symlink_to(outside / "secret.npy")
    with pytest.raises(PathEscapeError, match=r"through the symbolic link 'a\.npy'"):
        disk.copy("a.npy", "b.npy")
    assert not (root / "b.npy").exists()
    with pytest.raises(PathEscapeError):
        disk.load("a.npy")


def test_copy_of_a_tree_leaves_out_links_leading_out(places: Places) -> None:
    disk, root, outside = places
    disk.save(np.ones(2), "tree/kept.npy")
    (root / "tree" / "leak.npy").symlink_to(outside / "secret.npy")
    (root / "tree" / "leakdir").symlink_to(outside, target_is_directory=True)
    disk.copy("tree", "copy")
    assert _files_under(root / "copy") == ["kept.npy"]


@pytest.mark.parametrize(("linked", "destination"), [("link", "link/sub"), ("data/inner", "data/inner/sub")])
def test_a_folder_is_not_copied_into_itself_through_a_link(
    places: Places, linked: str, destination: str
) -> None:
    # names were compared, not places: the copy went in, and nested itself in the source
    disk, root, _ = places
    disk.save(np.ones(2), "data/x.npy")
    (root / linked).symlink_to(root / "data", target_is_directory=True)
    before = _files_under(root / "data")
    with pytest.raises(InvalidPathError, match="into itself"):
        disk.copy("data", destination)
    other = DiskBackend(root=root / "data")  # the same place, as another backend sees it
    with pytest.raises(InvalidPathError, match="into itself"):
        FileManager({"a": disk, "b": other}).copy("data", "sub", "a", dest_backend="b")
    assert _files_under(root / "data") == before
    expected = ["inner", "x.npy"] if linked == "data/inner" else ["x.npy"]
    assert sorted(p.name for p in (root / "data").iterdir()) == expected


def test_recursive_listing_does_not_go_through_a_link_leading_out(places: Places) -> None:
    disk, root, outside = places
    disk.save(np.ones(2), "data/inside.npy")
    (root / "data" / "linked").symlink_to(outside, target_is_directory=True)
    (root / "data" / "secret.txt").symlink_to(outside / "secret.txt")
    assert disk.list_files("data", recursive=True) == ["data/inside.npy"]
    assert disk.list_files(".", recursive=True) == ["data/inside.npy"]
    # the names themselves are there to be seen (and deleted)
    assert disk.list_dir("data") == ["inside.npy", "linked", "secret.txt"]
    with pytest.raises(PathEscapeError):
        disk.list_files("data/linked")


@pytest.mark.parametrize(
    "target",
    ["../outside/secret.txt", "sub/../../outside/secret.txt", "ABSOLUTE"],
    ids=["dotdot", "dotdot-deeper", "absolute"],
)
def test_every_kind_of_link_leading_out_is_refused(places: Any, target: str) -> None:
    disk, root, outside = places
    (root / "sub").mkdir()
    link_target = str(outside / "secret.txt") if target == "ABSOLUTE" else target
    (root / "link.txt").symlink_to(link_target)
    operations: list[Callable[[], object]] = [
        lambda: disk.load("link.txt"),
        lambda: disk.save("overwritten", "link.txt"),
        lambda: disk.copy("link.txt", "copy.txt"),
        lambda: disk.stat("link.txt"),
        lambda: disk.exists("link.txt"),
    ]
    for operation in operations:
        with pytest.raises(PathEscapeError, match="outside this backend's root"):
            operation()
    assert (outside / "secret.txt").read_text() == "secret"


def test_a_link_on_the_way_that_leads_out_is_refused_for_writes(places: Places) -> None:
    disk, root, outside = places
    (root / "out").symlink_to(outside, target_is_directory=True)
    for operation in (
        lambda: disk.save(np.zeros(2), "out/new.npy"),
        lambda: disk.ensure_directory("out/made"),
        lambda: disk.delete("out/secret.npy"),
        lambda: disk.delete_all("out/secret.txt"),
        lambda: disk.move("out/secret.txt", "taken.txt"),
    ):
        with pytest.raises(PathEscapeError):
            operation()
    assert _files_under(outside) == ["secret.npy", "secret.txt"]


def test_delete_all_of_a_folder_holding_a_link_leading_out_keeps_the_outside(places: Places) -> None:
    disk, root, outside = places
    disk.save(np.ones(2), "run/x.npy")
    (root / "run" / "out").symlink_to(outside, target_is_directory=True)
    disk.delete_all("run")
    assert not (root / "run").exists()
    assert _files_under(outside) == ["secret.npy", "secret.txt"]


# -- links inside the root ----------------------------------------------------------------------


def test_delete_removes_the_link_not_the_file_it_points_to(places: Places) -> None:
    disk, root, _ = places
    disk.save("real", "real.txt")
    (root / "alias.txt").symlink_to("real.txt")
    disk.delete("alias.txt")
    assert not os.path.lexists(root / "alias.txt")
    assert disk.load("real.txt") == "real"


def test_move_moves_the_link_itself(places: Places) -> None:
    disk, root, _ = places
    disk.save("real", "real.txt")
    (root / "alias.txt").symlink_to(str(root / "real.txt"))  # absolute, so it still works moved
    disk.move("alias.txt", "sub/alias.txt")
    assert (root / "sub" / "alias.txt").is_symlink()
    assert (root / "real.txt").read_text() == "real"
    assert disk.load("sub/alias.txt") == "real"


def test_links_that_stay_inside_are_followed(places: Places) -> None:
    disk, root, _ = places
    disk.save(np.arange(4), "real/a.npy")
    (root / "rel.npy").symlink_to("real/a.npy")
    (root / "abs.npy").symlink_to(root / "real" / "a.npy")
    (root / "real_alias").symlink_to("real", target_is_directory=True)
    (root / "real" / "up").symlink_to("..", target_is_directory=True)  # a loop through folders
    for path in ("rel.npy", "abs.npy", "real_alias/a.npy", "real/up/real/a.npy"):
        np.testing.assert_array_equal(disk.load(path), np.arange(4))
    disk.save(np.arange(5), "rel.npy")  # writes through the link, into the file it names
    assert (root / "rel.npy").is_symlink()
    np.testing.assert_array_equal(np.load(root / "real" / "a.npy"), np.arange(5))
    listed = disk.list_files(".", recursive=True)
    # a folder is walked once per listing, under its first path in name order ('real' before
    # 'real_alias' and 'real/up/real')
    assert listed == ["abs.npy", "real/a.npy", "rel.npy"]
    assert disk.list_files("real_alias") == ["real_alias/a.npy"]  # its own listing walks it
    for path in listed:  # every listed path loads, and the folder loop ended
        disk.load(path)


def test_a_symlink_loop_is_a_clear_error_and_left_out_of_listings(places: Places) -> None:
    disk, root, _ = places
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    with pytest.raises(SymlinkLoopError) as caught:
        disk.load("a/x.npy")
    assert isinstance(caught.value, PolystoreError) and isinstance(caught.value, OSError)
    assert caught.value.errno == errno.ELOOP
    assert "symbolic links" in str(caught.value)
    with pytest.raises(SymlinkLoopError):
        disk.load("a")
    assert disk.list_files(".", recursive=True) == []


def test_a_fifo_is_not_read_and_not_listed(places: Places) -> None:
    disk, root, _ = places
    os.mkfifo(root / "pipe.npy")
    with pytest.raises(UnsupportedFormatError, match="not a regular file"):
        disk.load("pipe.npy")  # would wait for a writer forever if opened for reading blindly
    assert disk.list_files(".") == []


# -- the race: folders and files swapped for links while operations run ----------------------
RACE_SECONDS = 2.0


SECRET = 7  # the value of the files outside the root: reading it back would be a leak
PLACES = ("sub", "sub/deep")  # a folder swapped for a link, and one below it
SECRET_NAMES = [f"s{i}.npy" for i in range(3)]  # swapped for links to outside files of that name


def _saver(root: str, ready: Any, stop: Any, counts: Any) -> None:
    """Save, copy, load, list and delete in ``sub/`` and ``sub/deep/`` over and over; count
    what went through, what was refused, what leaked from outside, and any error not ours."""
    disk = DiskBackend(root=root, durable=False)
    frame = np.zeros((16, 16), np.uint8)
    saved = refused = reads = index = 0
    leaks: list[str] = []
    raw: list[str] = []
    ready.release()
    while not stop.is_set():
        index += 1
        place = PLACES[index % 2]
        name = f"{place}/f{index % 50}.npy"
        try:
            disk.save(frame, name)
            disk.copy(name, f"{place}/c{index % 50}.npy")
            saved += 1
        except PolystoreError:  # the folder was a link leading out (or absent) just then
            refused += 1
        except Exception as error:
            raw.append(f"{type(error).__name__}: {error}")
        for secret in SECRET_NAMES:  # reads: found inside (value 1) or refused; never 7
            try:
                if int(disk.load(f"{place}/{secret}")[0, 0]) == SECRET:
                    leaks.append(f"loaded {place}/{secret} from outside")
                reads += 1
            except PolystoreError:
                pass
            except Exception as error:
                raw.append(f"{type(error).__name__}: {error}")
        try:
            leaks.extend(f"listed {p}" for p in disk.list_files("sub", recursive=True) if "outside" in p)
            disk.delete(f"{place}/c{index % 50}.npy")
        except PolystoreError:
            pass
        except Exception as error:
            raw.append(f"{type(error).__name__}: {error}")
    counts.put(("saver", saved, refused, raw[:5] + leaks[:5], reads))


def _exchanger() -> Callable[[str, str], None]:
    """Swap two names in one step (Linux's renameat2 RENAME_EXCHANGE), so that a name is a
    file (or folder) one instant and a link the next, never absent: the narrowest window for
    an operation that checked it, then opens it. Elsewhere: two renames."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2: Any = getattr(libc, "renameat2", None)

    def two_renames(a: str, b: str) -> None:
        os.rename(a, a + ".swap")
        os.rename(b, a)
        os.rename(a + ".swap", b)

    def exchange(a: str, b: str) -> None:
        at_cwd, rename_exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
        if renameat2(at_cwd, a.encode(), at_cwd, b.encode(), rename_exchange) != 0:
            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number), a)

    if renameat2 is None or sys.platform != "linux":
        return two_renames
    return exchange


def _swapper(root: str, ready: Any, stop: Any, counts: Any) -> None:
    """Swap each secret file, then ``sub/deep``, then ``sub`` for a link to the same name
    outside (prepared beside it as ``*.link``) and back, as fast as it can."""
    exchange = _exchanger()
    pairs = [(os.path.join(root, place, name), os.path.join(root, place, name + ".link"))
             for place in PLACES for name in SECRET_NAMES]
    pairs += [(os.path.join(root, place), os.path.join(root, place + ".link")) for place in reversed(PLACES)]
    swaps = 0
    ready.release()
    while not stop.is_set():
        for name, link in pairs:
            try:
                exchange(name, link)  # the name is now a link leading out ...
                exchange(name, link)  # ... and now itself again
                swaps += 1
            except OSError:  # 'sub' is swapped out, or a file was replaced meanwhile: go on
                pass
    counts.put(("swapper", swaps, 0, [], 0))


def test_files_and_folders_swapped_for_links_while_processes_work_let_nothing_out(
    tmp_path: Path,
) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    for place in PLACES:
        (root / place).mkdir(parents=True)
        (outside / place).mkdir(parents=True)
        (root / (place + ".link")).symlink_to(outside / place)
        for name in SECRET_NAMES:  # the same names inside (1) and outside (7)
            np.save(outside / place / name, np.full((2, 2), SECRET, np.uint8))
            np.save(root / place / name, np.ones((2, 2), np.uint8))
            (root / place / (name + ".link")).symlink_to(outside / place / name)
        np.save(outside / place / "only_outside.npy", np.zeros(1))
    before = _files_under(outside)
    context = multiprocessing.get_context("spawn")
    ready, stop, counts = context.Semaphore(0), context.Event(), context.Queue()
    processes = [context.Process(target=_saver, args=(str(root), ready, stop, counts)) for _ in range(2)]
    processes.append(context.Process(target=_swapper, args=(str(root), ready, stop, counts)))
    for process in processes:
        process.start()
    for _ in processes:
        assert ready.acquire(timeout=60)
    time.sleep(RACE_SECONDS)
    stop.set()
    results = [counts.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert _files_under(outside) == before, "files (or temp files) landed outside the root"
    for place in PLACES:  # none overwritten
        assert all(np.load(outside / place / name)[0, 0] == SECRET for name in SECRET_NAMES)
    assert [raw for result in results for raw in result[3]] == []  # no raw error, nothing leaked
    saved = sum(result[1] for result in results if result[0] == "saver")
    refused = sum(result[2] for result in results if result[0] == "saver")
    swaps = sum(result[1] for result in results if result[0] == "swapper")
    reads = sum(result[4] for result in results)
    assert saved > 0 and refused > 0 and swaps > 0 and reads > 0, results  # the race was run


# -- files that name other files ------------------------------------------------------------


def test_an_ome_tiff_naming_a_file_outside_the_root_is_read_alone(
    places: Places, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A multi-file OME-TIFF lists the files holding its planes by name; tifffile opens them
    beside the file it reads (here, from the working folder), which would leave the root."""
    tifffile = pytest.importorskip("tifffile")
    disk, root, outside = places
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/'
        'OME/2016-06" UUID="urn:uuid:{own}"><Image ID="Image:0"><Pixels DimensionOrder="XYZCT" '
        'ID="Pixels:0" SizeX="4" SizeY="3" SizeZ="2" SizeC="1" SizeT="1" Type="uint8">'
        '<Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
        '<TiffData FirstZ="0" IFD="0" PlaneCount="1"><UUID FileName="a.ome.tif">urn:uuid:'
        '11111111-1111-1111-1111-111111111111</UUID></TiffData>'
        '<TiffData FirstZ="1" IFD="0" PlaneCount="1"><UUID FileName="../outside/b.ome.tif">'
        'urn:uuid:22222222-2222-2222-2222-222222222222</UUID></TiffData></Pixels></Image></OME>'
    )
    own, other = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
    tifffile.imwrite(root / "a.ome.tif", np.ones((3, 4), np.uint8), description=xml.format(own=own),
                     metadata=None)
    tifffile.imwrite(outside / "b.ome.tif", np.full((3, 4), SECRET, np.uint8),
                     description=xml.format(own=other), metadata=None)
    assert tifffile.imread(root / "a.ome.tif")[1, 0, 0] == SECRET  # tifffile alone reads both files
    monkeypatch.chdir(root)  # where a read by the path the backend was given would look
    loaded = disk.load("a.ome.tif")
    assert SECRET not in loaded and loaded.shape == (3, 4)
