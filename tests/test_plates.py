"""The plate model: well names, every built-in naming convention, collisions and ranges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from plate_helpers import CONVENTIONS, NAMED, plate_items, write_plate_tree

import polystore
from polystore import PolystoreError
from polystore.plates import (
    BUILTIN,
    HEADER_KEYS,
    Components,
    PlateNameError,
    channel_names,
    components_of,
    format_name,
    index_label,
    number_plate,
    parse_components,
    plate_format,
    recognise,
    register_convention,
    unregister_convention,
    well_name,
    well_position,
)
from polystore.streaming.protocol import path_metadata


def parse_plate_path(node: str):  # type: ignore[no-untyped-def]
    """Where the zarr backend puts node ``node`` of a store (its plate address)."""
    pytest.importorskip("zarr")
    from polystore.backends.zarr.addresses import address_of
    from polystore.backends.zarr.config import ZarrConfig

    return address_of(node, ZarrConfig())


@pytest.fixture
def user_conventions():
    """Conventions a test registers are removed after it."""
    names: list[str] = []
    yield names
    for name in names:
        unregister_convention(name)


# -- well names ----------------------------------------------------------------------------------
def test_numeric_rows_and_columns_become_letters_and_padded_numbers_never_run_together() -> None:
    a12 = parse_components("r01c12f01p01-ch1sk1fk1fl1.tiff")
    k02 = parse_components("r11c02f01p01-ch1sk1fk1fl1.tiff")
    assert a12 is not None and k02 is not None
    assert (a12.well, k02.well) == ("A12", "K02")
    assert well_name(1, 12) == "A12" and well_name(11, 2) == "K02"
    assert well_name("b3") == well_name("B", "003") == well_name("B", 3) == "B03"
    assert [well_name(r, 1) for r in (26, 27, 32)] == ["Z01", "AA01", "AF01"]


@pytest.mark.parametrize("bad", ["AG01", "ZZ01", "A00", "A49", "B", "3B"])
def test_names_outside_a_plate_are_refused(bad: str) -> None:
    with pytest.raises(PlateNameError) as caught:
        well_name(bad)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, PolystoreError)


def test_plate_formats_from_the_wells_present() -> None:
    assert plate_format(["A01", "H12"]) == (8, 12)
    assert plate_format(["A01", "I01"]) == (16, 24)
    assert plate_format(["P24"]) == (16, 24)
    assert plate_format(["AF48"]) == (32, 48)
    assert well_position("AF48") == (31, 47)


# -- every built-in convention ---------------------------------------------------------------------
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_each_convention_reads_the_names_it_writes(convention: str) -> None:
    items = list(plate_items(convention, z=2, t=2))
    assert len({item.path for item in items}) == len(items)  # no two images share a name
    read = []
    for item in items:
        found = recognise(item.path)
        assert found.convention == convention, item.path
        assert found.components is not None, item.path
        # a plate store places a name alone, unless it writes an index as text
        assert (found.components.unplaced() is None) == (convention not in NAMED), item.path
        read.append(found.components)
    # an index written as text (Incucyte's "green", "00d04h00m") is numbered among the plate's names
    assert number_plate(read) == [item.components for item in items]


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_a_synthetic_file_tree_per_convention(tmp_path: Path, convention: str) -> None:
    import tifffile

    items = write_plate_tree(tmp_path, convention, t=2)
    expected = {item.components: item.value for item in items}
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    read = [parse_components(file.relative_to(tmp_path).as_posix(), strict=True) for file in files]
    assert None not in read
    seen = {c: int(tifffile.imread(file)[0, 0]) for c, file in zip(number_plate(read), files, strict=True)}  # type: ignore[arg-type]
    assert seen == expected  # every file read where its name says, and only those


@pytest.mark.parametrize("convention", BUILTIN, ids=lambda c: c.name)
def test_the_documented_example_of_each_convention(convention) -> None:
    components = parse_components(convention.example)
    assert components is not None and components.convention == convention.name
    assert components.well == "B03"


def test_the_same_position_has_the_same_indices_whatever_the_instrument() -> None:
    # ImageXpress, Phenix, Yokogawa count from 1; CellInsight from 0; NGFF paths from 0
    names = {
        "imagexpress": "B03_s2_w2.tif",
        "opera-phenix": "r02c03f02p01-ch2sk1fk1fl1.tiff",
        "yokogawa": "X_B03_T0001F002L01A01Z01C02.tif",
        "cellinsight": "X_B03f01d1.TIF",
        "well-folders": "x/B03/s2_w2.tif",
    }
    read = {name: parse_components(path) for name, path in names.items()}
    assert {(c.well, c.field, c.channel) for c in read.values() if c} == {("B03", 1, 1)}
    assert {c.convention for c in read.values() if c} == set(names)


def test_imagexpress_as_metaxpress_writes_it() -> None:
    guid = "0A163325-7B23-4E3C-BC17-E995BCF8818D"
    # the wavelength is followed by the GUID directly: "w3" + "0A16...", not "w30"
    found = parse_components(f"run/HTS_A01_s1_w3{guid}.tif")
    assert found is not None and (found.plate, found.well, found.channel) == ("HTS", "A01", 2)
    found = parse_components("exp/2024-01-05/1234/TimePoint_3/ZStep_2/20240105-plate7_C04_s2_w1.TIF")
    assert found is not None
    assert (found.plate, found.well, found.field, found.channel, found.z, found.t) == (
        "20240105-plate7", "C04", 1, 0, 1, 2)
    thumbnail = recognise(f"HTS_A01_s1_w1_thumb{guid}.tif")
    assert thumbnail.components is None and "thumbnail" in (thumbnail.skipped or "")
    with pytest.raises(PlateNameError, match="thumbnail"):
        parse_components(f"HTS_A01_s1_w1_thumb{guid}.tif", strict=True)
    suffixed = parse_components("A01_s1_w2_mask.tif")
    assert suffixed is not None and suffixed.extras == {"suffix": "mask"} and suffixed.channel == 1
    # a plate folder, and the well's own folder, around an ImageXpress name
    found = parse_components("plate9/B03/B03_s1_w1.tif")
    assert found is not None and (found.plate, found.well) == ("plate9", "B03")


def test_other_layouts_details() -> None:
    ngff = parse_components("plate.zarr/b/3/2")
    assert ngff is not None and (ngff.well, ngff.field, ngff.convention) == ("B03", 2, "ngff")
    phenix = parse_components("meas1/Images/r16c24f12p05-ch4sk7fk1fl1.tiff")
    assert phenix is not None
    assert (phenix.plate, phenix.well, phenix.field, phenix.z, phenix.channel, phenix.t) == (
        "meas1", "P24", 11, 4, 3, 6)
    incucyte = parse_components("VID1_phase_B2_3_2019y01m23d_12h00m.tif")
    assert incucyte is not None
    assert (incucyte.plate, incucyte.well, incucyte.field, incucyte.t) == ("VID1", "B02", 2, None)
    assert incucyte.extras == {"channel_name": "phase", "t_name": "2019y01m23d_12h00m"}
    folder = parse_components("plate1/A01/image.tif")
    assert folder is not None and (folder.well, folder.field, folder.extras) == ("A01", 0, {"name": "image"})
    for nothing in ("random.tif", "cells_final.tif", "a/b/c", "frame_000123.npy", ""):
        assert parse_components(nothing) is None


# -- ranges (issue 11, item 5) ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("A01_s1_w0.tif", "channel written as 0"),
        ("B01_s0.tif", "field written as 0"),
        ("A01_s1_w30000.tif", "channel written as 30000"),
        ("A01_s1_w1000000.tif", "channel written as 1000000"),
        ("r01c01f00p01-ch1sk1fk1fl1.tiff", "field written as 00"),
        ("r01c01f01p01-ch0sk1fk1fl1.tiff", "channel written as 0"),
        ("X_A01_T0001F001L01A01Z01C00.tif", "channel written as 00"),
        ("P_A01f00d100.TIF", "channel written as 100"),
        ("A01_s1_w" + "1" * 5000 + ".tif", "channel written as 1111"),  # int() refuses 4300+ digits
    ],
)
def test_indices_out_of_a_conventions_range_are_refused(name: str, what: str) -> None:
    with pytest.raises(PlateNameError, match=what) as caught:
        parse_components(name)
    assert name in str(caught.value)
    with pytest.raises(PlateNameError):
        path_metadata(f"plate/{name}")  # a stream refuses it too, never shifting it to -1
    with pytest.raises(PlateNameError):
        parse_plate_path(name)


def test_cellinsight_counts_from_zero() -> None:
    first = parse_components("P_A01f00d0.TIF")
    assert first is not None and (first.field, first.channel) == (0, 0)


# -- conventions of one's own, ambiguity -------------------------------------------------------------
def test_user_conventions_are_tried_first(user_conventions: list[str]) -> None:
    with pytest.raises(PlateNameError):
        parse_components("A01_s0_w0.tif")
    user_conventions.append("zero-based")
    register_convention("zero-based", r"(?P<well>[A-Z]\d\d)_s(?P<field>\d+)_w(?P<channel>\d+)",
                        base={"field": 0, "channel": 0}, example="A01_s0_w0.tif")
    found = parse_components("plate/A01_s0_w0.tif")
    assert found is not None and (found.convention, found.field, found.channel) == ("zero-based", 0, 0)
    assert polystore.parse_components is parse_components
    # a pattern given for one call, without registering it
    once = parse_components("x/well-C07-site-3.png", convention=r"well-(?P<well>[A-Z]\d+)-site-(?P<site>\d+)")
    assert once is not None and (once.well, once.field, once.convention) == ("C07", 2, "pattern")


def test_a_name_two_conventions_read_differently_is_an_error_naming_both(user_conventions: list[str]) -> None:
    user_conventions += ["field-dash", "channel-dash"]
    register_convention("field-dash", r"(?P<well>[A-Z]\d\d)-(?P<field>\d+)")
    register_convention("channel-dash", r"(?P<well>[A-Z]\d\d)-(?P<channel>\d+)")
    with pytest.raises(PlateNameError, match="ambiguous") as caught:
        parse_components("A01-3.tif")
    assert "field-dash" in str(caught.value) and "channel-dash" in str(caught.value)
    # saying which one settles it
    chosen = parse_components("A01-3.tif", convention="field-dash")
    assert chosen is not None and chosen.field == 2


def test_a_name_inside_a_well_folder_is_not_ambiguous() -> None:
    # well-folders reads the well; Yokogawa reads the same well and more: one reading, Yokogawa's
    found = parse_components("plate/B03/AssayPlate_B03_T0001F002L01A01Z01C03.tif")
    assert found is not None and (found.convention, found.field, found.channel) == ("yokogawa", 1, 2)


def test_registering_checks_the_convention_and_names_it(user_conventions: list[str]) -> None:
    with pytest.raises(PlateNameError, match=r"'broken'.*regular expression"):
        register_convention("broken", r"(?P<well>[A-Z]")
    with pytest.raises(PlateNameError, match=r"'no-well'.*well"):
        register_convention("no-well", r"(?P<field>\d+)")
    with pytest.raises(PlateNameError, match="exists already"):
        register_convention("imagexpress", r"(?P<well>[A-Z]\d\d)")
    with pytest.raises(PlateNameError, match="example"):
        register_convention("mismatch", r"(?P<well>[A-Z]\d\d)_x", example="A01_y.tif")
    with pytest.raises(PlateNameError, match=r"Unknown naming convention 'nope'.*imagexpress"):
        parse_components("A01.tif", convention="nope")
    with pytest.raises(PlateNameError, match=r"tried: .*imagexpress.*incucyte"):
        parse_components("nothing-here.tif", strict=True)


# -- the stream header and the zarr address -------------------------------------------------------
def test_the_header_carries_the_components_and_gives_them_back() -> None:
    components = parse_components("plate1/B03_s2_w3_z4_t5_mask.tif")
    assert components is not None
    header = path_metadata("plate1/B03_s2_w3_z4_t5_mask.tif")
    assert header == components.to_header()
    assert header["well"] == "B03" and header["field"] == header["site"] == 1 and header["plate"] == "plate1"
    assert Components.from_header(json.loads(json.dumps(header))) == components
    older = {"well": "B03", "site": 1, "channel": 2}  # a header with "site" only
    assert Components.from_header(older) == Components("B", "03", field=1, channel=2)
    assert Components.from_header({"path": "x"}) is None
    assert Components.from_header({"well": "not a well"}) is None
    assert path_metadata("frame.npy") == {}


def test_zarr_addresses_come_from_the_model() -> None:
    address = parse_plate_path("A01/s2_w3.tif")  # a well folder inside the store
    assert address is not None and (address.field_path, address.plane_index) == ("A/01/1", (2,))
    phenix = parse_plate_path("r02c03f01p02-ch2sk1fk1fl1.tiff")
    assert phenix is not None and (phenix.field_path, phenix.plane_axes, phenix.plane_index) == (
        "B/03/0", "tcz", (0, 1, 1))
    # an NGFF path is the node: written as another tool named it
    assert parse_plate_path("A/1/0").field_path == "A/1/0"  # type: ignore[union-attr]
    assert parse_plate_path("other/B/03/0") is None  # a nested group is not this store's plate


def test_a_phenix_plate_lands_in_the_right_wells_of_a_zarr_plate(tmp_path: Path) -> None:
    pytest.importorskip("zarr")
    from polystore.backends.zarr import ZarrBackend

    backend = ZarrBackend(root=tmp_path)
    items = list(plate_items("opera-phenix", wells=("A12", "K02"), fields=1, channels=2))
    for item in items:
        node = item.path.rsplit("/", 1)[-1]
        backend.save(np.full((4, 4), item.value, np.uint16), f"p.zarr/{node}")
    for item in items:
        c = item.components
        field_image = backend.load(f"p.zarr/{c.row}/{c.column}/{c.field}")
        assert int(np.asarray(field_image)[(c.t, c.channel, c.z, 0, 0)]) == item.value
    with pytest.raises(PlateNameError):
        backend.save(np.zeros((4, 4), np.uint16), "p.zarr/A01_s1_w0.tif")
    assert not (tmp_path / "p.zarr" / "A" / "01" / "-1").exists()
    # the channels labelled as Phenix names them, by the plate model (not "w1", "w2")
    import zarr

    omero = zarr.open_group(tmp_path / "p.zarr" / "A" / "12" / "0", mode="r").attrs["ome"]["omero"]
    assert [channel["label"] for channel in omero["channels"]] == ["ch1", "ch2"]


def test_format_name_writes_what_each_convention_can_say() -> None:
    components = Components.of("B03", site=1, channel=0, plate="P")
    assert format_name(components, "imagexpress") == "P_B03_s2_w1.tif"
    assert format_name(components, "cellinsight") == "P_B03f01d0.TIF"
    with pytest.raises(PlateNameError, match="cannot write channel"):
        format_name(components, "ngff")


def test_indices_are_shown_as_each_instrument_numbers_them() -> None:
    from polystore.plates import index_label

    shown = {
        name: (index_label(c, "channel"), index_label(c, "field"))
        for name in ("A01_s2_w3.tif", "r01c01f02p01-ch3sk1fk1fl1.tiff", "P_A01_T0001F002L01A01Z01C03.tif",
                     "P_A01f01d2.TIF", "B/03/1")
        if (c := parse_components(name)) is not None
    }
    assert shown == {"A01_s2_w3.tif": ("w3", "2"), "r01c01f02p01-ch3sk1fk1fl1.tiff": ("ch3", "2"),
                     "P_A01_T0001F002L01A01Z01C03.tif": ("C03", "2"), "P_A01f01d2.TIF": ("d2", "1"),
                     "B/03/1": ("", "1")}
    assert index_label(Components("A", "1", channel=1), "channel") == "c1"  # no convention: 0-based


def test_a_pattern_says_from_what_a_group_counts_in_its_name() -> None:
    pattern = r"(?P<well>[A-Z]\d\d)_f(?P<site0>\d+)d(?P<channel>\d)"
    found = parse_components("C05_f0d1.png", convention=pattern)
    assert found is not None and (found.field, found.channel) == (0, 0)
    with pytest.raises(PlateNameError, match="channel written as 0"):
        parse_components("C05_f0d0.png", convention=pattern)


def test_the_documented_table_is_the_built_in_table() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "plates.md").read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| `")]
    documented = [(cells[0].strip(" `"), cells[2].strip(" `")) for cells in rows if len(cells) == 5]
    assert documented == [(c.name, c.example) for c in BUILTIN]


# -- real names, written by hand (not by format_name) -------------------------------------------------
GUID = "E94C24BD-45E4-450A-9919-257C714278F7"
REAL_NAMES = [
    # (path as the instrument writes it, convention, plate, well, field, channel, z, t) (0-based)
    (f"2023-02-21/1334/ZStep_3/Projection-Mix_E07_s2_w4{GUID}.tif", "imagexpress",
     "Projection-Mix", "E07", 1, 3, 2, None),
    ("run/HTS015/TimePoint_12/HTS015_P24_s9_w2.TIF", "imagexpress", "HTS015", "P24", 8, 1, None, 11),
    ("HTS015_AF48_s1_w1_z07_t03.tif", "imagexpress", "HTS015", "AF48", 0, 0, 6, 2),
    ("screen/plate3/H12/site4_ch2_z3_t9.tif", "well-folders", "plate3", "H12", 3, 1, 2, 8),
    ("screen/plate3/H12/field02-c3.png", "well-folders", "plate3", "H12", 1, 2, None, None),
    ("plate.zarr/H/12/3", "ngff", "plate.zarr", "H12", 3, None, None, None),
    ("Meas_01(2022-05-04_13-00-11)/Images/r08c12f09p03-ch4sk5fk1fl1.tiff", "opera-phenix",
     "Meas_01(2022-05-04_13-00-11)", "H12", 8, 3, 2, 4),
    ("AssayPlate_PerkinElmer_CellCarrier-384_P24_T0012F003L01A02Z05C02.tif", "yokogawa",
     "AssayPlate_PerkinElmer_CellCarrier-384", "P24", 2, 1, 4, 11),
    ("MFGTMP_150612140001_H12f12d3.TIF", "cellinsight", "MFGTMP_150612140001", "H12", 12, 3, None, None),
    ("VID1_red_H12_3_2019y01m23d_12h00m.tif", "incucyte", "VID1", "H12", 2, None, None, None),
]


@pytest.mark.parametrize(("path", "convention", "plate", "well", "field", "channel", "z", "t"), REAL_NAMES,
                         ids=[row[1] + "-" + row[0].rsplit("/", 1)[-1][:24] for row in REAL_NAMES])
def test_real_names_of_each_instrument_give_every_component(
    path: str, convention: str, plate: str, well: str, field: int, channel: int | None, z: int | None,
    t: int | None,
) -> None:
    found = recognise(path)
    c = found.components
    assert found.convention == convention and c is not None
    assert (c.plate, c.well, c.field, c.channel, c.z, c.t) == (plate, well, field, channel, z, t)


def test_every_built_in_convention_has_a_real_name_above() -> None:
    assert {row[1] for row in REAL_NAMES} == set(CONVENTIONS)


# -- names a plate store cannot place: refused, never merged (review item 1) -----------------------
@pytest.mark.parametrize(
    "names",
    [
        {"A01_s1_w2.tif": None, "A01_s1_w2_mask.tif": "'suffix' ('mask')"},  # ImageXpress suffix
        {"B03/nuclei.tif": "'name' ('nuclei')", "B03/actin.tif": "'name' ('actin')"},  # a well folder's
        {"VID1_phase_B2_1_00d00h00m.tif": "channel 'phase' as text",  # Incucyte's channels
         "VID1_green_B2_1_00d00h00m.tif": "channel 'green' as text"},
        {"VID1_B2_1_00d00h00m.tif": "t '00d00h00m' as text",  # and its time stamps
         "VID1_B2_1_00d04h00m.tif": "t '00d04h00m' as text"},
    ],
    ids=["suffix", "well-folder-names", "incucyte-channels", "incucyte-times"],
)
def test_names_a_zarr_plate_cannot_place_are_refused_not_merged(
    tmp_path: Path, names: dict[str, str | None]
) -> None:
    pytest.importorskip("zarr")
    from polystore.backends.zarr import ZarrBackend

    backend = ZarrBackend(root=tmp_path)
    for value, (name, refused) in enumerate(names.items(), start=1):
        if refused is None:
            backend.save(np.full((4, 4), value, np.uint16), f"p.zarr/{name}")
            continue
        with pytest.raises(PlateNameError, match="cannot go into a plate") as caught:
            backend.save(np.full((4, 4), value, np.uint16), f"p.zarr/{name}")
        assert refused in str(caught.value) and isinstance(caught.value, PolystoreError)
    for value, (name, refused) in enumerate(names.items(), start=1):
        if refused is None:  # what was saved is what loads: nothing was written over it
            assert int(np.asarray(backend.load(f"p.zarr/{name}"))[0, 0]) == value


def test_cellomics_overlays_are_skipped_like_thumbnails(tmp_path: Path) -> None:
    overlay = recognise("WHICA-VTI1_090915160001_A01f00o1.DIB")
    assert overlay.components is None and "overlay" in (overlay.skipped or "")
    image = parse_components("WHICA-VTI1_090915160001_A01f00d1.DIB")
    assert image is not None and (image.well, image.field, image.channel) == ("A01", 0, 1)
    pytest.importorskip("zarr")
    from polystore.backends.zarr import ZarrBackend

    backend = ZarrBackend(root=tmp_path)
    backend.save(np.full((4, 4), 10, np.uint16), "p.zarr/W_A01f00d1.TIF")
    backend.save(np.full((4, 4), 99, np.uint16), "p.zarr/W_A01f00o1.TIF")  # a plain array, beside the plate
    assert int(np.asarray(backend.load("p.zarr/W_A01f00d1.TIF"))[0, 0]) == 10
    assert int(np.asarray(backend.load("p.zarr/A/01/0"))[1, 0, 0]) == 10


def test_incucyte_names_are_numbered_among_a_plates_names() -> None:
    names = [f"VID1_{channel}_{well}_1_00d{hours:02d}h00m.tif"
             for well in ("B2", "A1") for hours in (8, 4, 0) for channel in ("green", "phase")]
    read = [parse_components(name) for name in names]
    numbered = number_plate(read)  # type: ignore[arg-type]
    # phase before green (Incucyte's order), time stamps in time order; the names stay, as labels
    assert {(c.extras["channel_name"], c.channel) for c in numbered} == {("phase", 0), ("green", 1)}
    times = {(c.extras["t_name"], c.t) for c in numbered}
    assert times == {("00d00h00m", 0), ("00d04h00m", 1), ("00d08h00m", 2)}
    assert all(c.unplaced() is None for c in numbered)
    assert channel_names(2, numbered) == ["phase", "green"]
    assert index_label(numbered[0], "t") == "00d08h00m"


def test_a_projection_beside_its_z_stack_is_marked_and_converted_without_it(tmp_path: Path) -> None:
    # MetaXpress: the planes in ZStep_N, the projection in the acquisition folder, the same names
    import tifffile

    name = f"Proj_E07_s1_w1{GUID}.tif"
    paths = {f"2023-02-21/1334/ZStep_{z}/{name}": 10 + z for z in (1, 2)} | {f"2023-02-21/1334/{name}": 99}
    read = [parse_components(path) for path in paths]
    numbered = number_plate(read)  # type: ignore[arg-type]
    assert [c.z for c in numbered] == [0, 1, None]
    assert [c.unplaced() is None for c in numbered] == [True, True, False]
    assert "projection of the Z stack" in (numbered[2].unplaced() or "")
    pytest.importorskip("dask")
    from polystore.distributed import plan_plate

    for path, value in paths.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(tmp_path / path, np.full((4, 4), value, np.uint16))
    plan = plan_plate(tmp_path)  # was: "Two files name the same image"
    assert plan.named == "cz" and [len(f.planes) for f in plan.fields] == [2]
    assert [s.path for s in plan.skipped] == [f"2023-02-21/1334/{name}"]
    assert "projection" in plan.skipped[0].reason


def test_the_converter_numbers_incucyte_channels_and_time_points(tmp_path: Path) -> None:
    pytest.importorskip("dask")
    from polystore.distributed import plan_plate

    items = write_plate_tree(tmp_path, "incucyte", wells=("B02",), fields=1, channels=2, t=2)
    plan = plan_plate(tmp_path)
    assert plan.named == "tc" and plan.channel_names == ("phase", "green")
    planes = dict(plan.fields[0].planes)
    for item in items:
        c = item.components
        assert planes[(c.t, c.channel)].path.endswith(item.path)


# -- names that are no plate names (review item 2) ---------------------------------------------------
@pytest.mark.parametrize("path", ["markers/CD45.tif", "stain_CD8.tif", "CD4/mask.png", "frame_T100.npy",
                                  "scan_X100.tif", "r33c01f01p01-ch1sk1fk1fl1.tiff",
                                  "X_A49_T0001F001L01A01Z01C01.tif"])
def test_a_well_outside_a_plate_is_no_well_and_streams_as_a_plain_item(path: str) -> None:
    from polystore.streaming.protocol import header_for

    assert parse_components(path) is None
    assert path_metadata(path) == {}
    array = np.zeros((2, 2), np.uint8)
    header = header_for(array.shape, array.dtype, "C", path)
    assert header["path"] == path and "well" not in header.get("metadata", {})


def test_a_well_folder_around_another_wells_name_is_ambiguous() -> None:
    with pytest.raises(PlateNameError, match=r"ambiguous.*imagexpress.*well-folders") as caught:
        parse_components("plate/B03/A01_s1_w1.tif")
    assert "well A01" in str(caught.value) and "well B03" in str(caught.value)
    chosen = parse_components("plate/B03/A01_s1_w1.tif", convention="imagexpress")
    assert chosen is not None and chosen.well == "A01"
    same = parse_components("plate/B03/B03_s1_w1.tif")  # the well's own folder: one reading
    assert same is not None and (same.plate, same.well, same.folder) == ("plate", "B03", "plate")


# -- the series, bases and labels a name records (review items 3, 4, 5) --------------------------------
@pytest.mark.parametrize(
    ("path", "folder", "plate"),
    [
        ("A01/s1_c1.tif", "", None),
        ("TimePoint_1/ZStep_2/A01_s1_w1.tif", "", None),
        ("Images/r01c01f01p01-ch1sk1fk1fl1.tiff", "", None),
        ("run7/plate1/TimePoint_1/A01_s1_w1.tif", "run7/plate1", "plate1"),
        ("run7/P1_A01_s1_w1.tif", "run7", "P1"),
        ("plate9/B03/B03_s1_w1.tif", "plate9", "plate9"),
    ],
)
def test_the_folder_is_what_lies_above_the_name(path: str, folder: str, plate: str | None) -> None:
    c = parse_components(path)
    assert c is not None and (c.folder, c.plate) == (folder, plate)
    assert components_of(path, c.to_header()).folder == folder  # type: ignore[union-attr]


def test_base_and_limits_given_under_site_count(user_conventions: list[str]) -> None:
    user_conventions.append("site-zero")
    register_convention("site-zero", r"(?P<well>[A-Z]\d\d)-f(?P<site>\d+)", base={"site": 0},
                        limits={"site": 3}, example="A01-f0.tif")
    found = parse_components("A01-f0.tif")
    assert found is not None and (found.convention, found.field) == ("site-zero", 0)
    with pytest.raises(PlateNameError, match="at most 3"):
        parse_components("A01-f3.tif")
    with pytest.raises(PlateNameError, match="field and site differently"):
        register_convention("both", r"(?P<well>[A-Z]\d\d)-f(?P<site>\d+)", base={"site": 0, "field": 1})


def test_labels_count_as_the_name_did_where_the_convention_is_unknown(user_conventions: list[str]) -> None:
    once = parse_components("x/well-C07-site-3.png", convention=r"well-(?P<well>[A-Z]\d+)-site-(?P<site>\d+)")
    assert once is not None and (once.field, index_label(once, "field")) == (2, "3")
    pattern = r"(?P<well>[A-Z]\d\d)_f(?P<site0>\d+)d(?P<channel1>\d)"
    counted = parse_components("C05_f0d1.png", convention=pattern)
    assert counted is not None
    assert (index_label(counted, "field"), index_label(counted, "channel")) == ("0", "c1")
    # registered in the pipeline's process only: its header says how it counts
    user_conventions.append("lab")
    register_convention("lab", r"(?P<well>[A-Z]\d\d)_f(?P<site0>\d+)_ch(?P<channel>\d+)",
                        example="A01_f0_ch1.tif")
    header = path_metadata("A01_f4_ch2.tif")
    unregister_convention("lab")
    received = components_of("A01_f4_ch2.tif", json.loads(json.dumps(header)))
    assert received is not None and received.convention == "lab"
    assert (index_label(received, "field"), index_label(received, "channel")) == ("4", "c2")
    folders = parse_components("plate/A01/s1_c2.tif")  # written c2: shown c2
    assert folders is not None and index_label(folders, "channel") == "c2"
    assert index_label(parse_components("plate/A01/s1_w2.tif"), "channel") == "w2"  # type: ignore[arg-type]


def test_channel_names_are_the_plate_models() -> None:
    phenix = parse_components("r01c01f01p01-ch2sk1fk1fl1.tiff")
    assert channel_names(3, [phenix]) == ["ch1", "ch2", "ch3"]  # type: ignore[list-item]
    assert channel_names(2, [parse_components("A_B03_T0001F001L01A01Z01C01.tif")]) == ["C01", "C02"]  # type: ignore[list-item]
    assert channel_names(2) == ["c0", "c1"]  # nothing says how they count


# -- headers -------------------------------------------------------------------------------------------
def test_a_header_out_of_range_is_refused_on_the_receiving_side() -> None:
    for bad in ({"well": "B03", "channel": 30000}, {"well": "B03", "channel": -1},
                {"well": "B03", "channel": 1.0}, {"well": "B03", "z": True},
                {"well": "B03", "labels": {"channel": "{:>999999999}"}}):
        with pytest.raises(PlateNameError):
            Components.from_header(bad)
    assert Components.from_header({"well": "control"}) is None  # a user's own "well" key: no position
    assert Components.from_header({"well": "B03", "channel": np.int64(2)}).channel == 2  # type: ignore[union-attr]


def test_header_keys_are_the_one_key_set() -> None:
    c = parse_components("run/P1_B03_s2_w3_z4_t5.tif")
    assert c is not None
    header = c.to_header()
    assert list(header) == [k for k in HEADER_KEYS if k in header]
    assert set(HEADER_KEYS) - set(header) == {"extras"}
