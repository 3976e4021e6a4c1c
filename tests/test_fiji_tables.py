"""Tables on their way to Fiji: the wire's typed table encoding (polystore.streaming.payloads)
gives back the DataFrame that was sent, refuses what it cannot carry, and checks what it reads;
what ImageJ's ResultsTables cannot hold is refused at send time.

The ResultsTables themselves (a real bridge process) are in test_fiji_bridge.py; these need no JVM.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from polystore.exceptions import CorruptDataError, UnsupportedDataError
from polystore.streaming.payloads import (
    TABLE_ENCODING,
    TABLE_MAGIC,
    decode_table,
    encode,
    encode_table,
)

pandas = pytest.importorskip("pandas")


def round_trip(frame: object, path: str = "t/cells.csv") -> object:
    payload = encode(frame, path)
    assert payload.kind == "table" and payload.metadata == {"encoding": TABLE_ENCODING}
    return decode_table(payload.array, payload.metadata, path)


FRAMES = {
    # each was changed by the split-JSON encoding this replaced (to_json / read_json)
    "text of digits": pandas.DataFrame({"id": ["001", "002", "010"], "v": [1.0, 2.0, 3.0]}),
    "text of numbers": pandas.DataFrame({"code": ["1.5", "2", "3e2"], "v": [1, 2, 3]}),
    "text NaN": pandas.DataFrame({"t": ["NaN", "nan", "inf"], "u": ["", "x", "true"]}),
    "infinities": pandas.DataFrame({"a": [np.inf, -np.inf, 1.0, np.nan]}),
    "full precision": pandas.DataFrame({"x": [0.1 + 0.2, 1 / 3, 123456789.123456789, 2.0**60 + 1]}),
    "large integers": pandas.DataFrame({"n": np.array([2**60 + 1, -(2**63), 2**63 - 1], dtype=np.int64),
                                        "u": np.array([2**64 - 1, 0, 1], dtype=np.uint64)}),
    "names like numbers": pandas.DataFrame({"0": [1.0, 2.0], "1": [3.0, 4.0]}),
    "names that are numbers": pandas.DataFrame(np.arange(6.0).reshape(3, 2)),
    "blank names": pandas.DataFrame({"": [1.0, 2.0], " ": [3.0, 4.0]}),
    "repeated names": pandas.DataFrame([[1, 2.5]], columns=["a", "a"]),
    "unicode": pandas.DataFrame({"Fläche µm²": [1.0, 2.0], "名前": ["chat", "été"]}),
    "no rows": pandas.DataFrame({"a": pandas.Series([], dtype=float), "b": pandas.Series([], dtype=object)}),
    "nothing": pandas.DataFrame(),
    "all missing": pandas.DataFrame({"a": [np.nan, np.nan], "t": pandas.Series([None, None], dtype=object)}),
    "missing text kept apart": pandas.DataFrame({"o": pandas.Series(["a", None, np.nan, pandas.NA],
                                                                    dtype=object)}),
    "text dtypes": pandas.DataFrame({"str": pandas.array(["a", None], dtype="str"),
                                     "string": pandas.array(["a", None], dtype="string"),
                                     "object": pandas.Series(["a", "b"], dtype=object)}),
    "nullable": pandas.DataFrame({"i": pandas.array([1, None, 3], dtype="Int64"),
                                  "u8": pandas.array([255, None, 0], dtype="UInt8"),
                                  "b": pandas.array([True, None, False], dtype="boolean"),
                                  "f": pandas.array([1.5, None, 2.0], dtype="Float32")}),
    "categories": pandas.DataFrame({"c": pandas.Categorical(["a", "b", "a", None]),
                                    "o": pandas.Categorical([3, 1, 3, 1], ordered=True)}),
    "dates": pandas.DataFrame({"when": pandas.to_datetime(["2024-01-01", "2024-01-02 03:04:05.000006"],
                                                          format="ISO8601"),
                               "took": pandas.to_timedelta([1, 2], unit="s")}),
    "small types": pandas.DataFrame({"i8": np.array([-1, 2], np.int8), "f2": np.array([0.5, 1], np.float16),
                                     "b": [True, False], "c": np.array([1 + 2j, 3], np.complex64)}),
    "an index": pandas.DataFrame({"a": [1, 2]}, index=pandas.Index(["r1", "r2"], name="row")),
    "a shifted range": pandas.DataFrame({"a": [1, 2]}, index=pandas.RangeIndex(5, 7)),
    "named columns": pandas.DataFrame({"a": [1]}).rename_axis("measure", axis=1),
    "a date index": pandas.DataFrame({"a": [1.0, 2.0]}, index=pandas.date_range("2024-01-01", periods=2)),
    "a categorical index": pandas.DataFrame({"a": [1]}, index=pandas.CategoricalIndex(["p"])),
}


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_a_dataframe_arrives_as_it_was_sent(name: str) -> None:
    frame = FRAMES[name]
    pandas.testing.assert_frame_equal(round_trip(frame), frame, check_exact=True)


def test_big_endian_columns_arrive_with_their_values() -> None:
    frame = pandas.DataFrame({"a": np.array([1.5, 2.5], dtype=">f8"), "b": np.array([7, 8], dtype=">i4")})
    back = round_trip(frame)
    assert back["a"].tolist() == [1.5, 2.5] and back["b"].tolist() == [7, 8]


def test_what_arrives_owns_its_memory() -> None:
    """A zero-copy stream item is a view of the sender's slot, reused for later items."""
    payload = encode(pandas.DataFrame({"a": [1.0, 2.0], "t": ["x", "y"]}), "t.csv")
    wire = payload.array.copy()
    back = decode_table(wire, payload.metadata)
    wire[:] = 0
    assert back["a"].tolist() == [1.0, 2.0] and back["t"].tolist() == ["x", "y"]
    numbers = np.arange(6.0).reshape(3, 2)
    table = decode_table(numbers, {})
    numbers[:] = -1
    assert table.to_numpy().tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]


REFUSED = {
    "mixed object column": (pandas.DataFrame({"m": ["a", 1]}), r"column 'm' holds 1 \(int\) among its text"),
    "bytes in text": (pandas.DataFrame({"m": pandas.Series([b"x"], dtype=object)}), "among its text"),
    "a time zone": (pandas.DataFrame({"t": pandas.to_datetime(["2024-01-01"]).tz_localize("UTC")}),
                    r"column 't' is of dtype datetime64\[\w+, UTC\]"),
    "periods": (pandas.DataFrame({"p": pandas.period_range("2024", periods=2, freq="D")}), "period"),
    "MultiIndex columns": (pandas.DataFrame([[1]], columns=pandas.MultiIndex.from_tuples([("a", "b")])),
                           "MultiIndex on its columns"),
    "MultiIndex rows": (pandas.DataFrame({"a": [1]}, index=pandas.MultiIndex.from_tuples([("a", "b")])),
                        "MultiIndex on its rows"),
    "a float name": (pandas.DataFrame({1.5: [1]}), r"column name 1.5 is 1.5 \(float\)"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_would_not_arrive_the_same_is_refused_when_sent(name: str) -> None:
    frame, message = REFUSED[name]
    with pytest.raises(UnsupportedDataError, match=message):
        encode_table(frame)


@pytest.mark.parametrize(("array", "message"), [
    (np.array(3.0), r"has shape \(\): a table of numbers is 1-D"),
    (np.zeros((2, 2, 2)), r"shape \(2, 2, 2\)"),
    (np.zeros(2, np.complex64), "holds complex64 values"),
])
def test_a_numeric_table_is_one_or_two_dimensional(array: np.ndarray, message: str) -> None:
    with pytest.raises(UnsupportedDataError, match=message):
        encode(array, "t.csv")
    with pytest.raises(UnsupportedDataError, match=message):
        decode_table(array, {}, "t.csv")  # (from a sender that did not check)


def test_numeric_tables_of_no_rows_and_one_column() -> None:
    assert decode_table(np.zeros((0, 3)), {}).shape == (0, 3)
    assert decode_table(np.zeros(0), {}).shape == (0, 1)
    assert decode_table(np.array([4.0, 5.0]), {})[0].tolist() == [4.0, 5.0]


def wire(description: object, data: bytes = b"", *, raw: bytes | None = None) -> np.ndarray:
    text = raw if raw is not None else json.dumps(description).encode()
    return np.frombuffer(TABLE_MAGIC + struct.pack("<Q", len(text)) + text + data, dtype=np.uint8)


def table(columns: list[object], rows: int = 2, **extra: object) -> dict[str, object]:
    return {"rows": rows, "columns": columns, "columns_name": None, "index": None, **extra}


def column(**spec: object) -> dict[str, object]:
    return {"name": "a", **spec}


def numbers(dtype: object, offset: int, nbytes: int) -> dict[str, object]:
    return column(kind="array", dtype=dtype, data={"offset": offset, "nbytes": nbytes})


def categorical(categories: list[str], **codes: object) -> dict[str, object]:
    return column(kind="categorical", ordered=False, codes=codes, categories={
        "kind": "text", "dtype": "str", "values": categories, "length": len(categories)})


def texts(dtype: str, values: list[object]) -> dict[str, object]:
    return column(kind="text", dtype=dtype, values=values)


FORGED = {
    "not a table": (np.frombuffer(b"{not json", np.uint8), "not a typed table"),
    "no bytes": (np.zeros(0, np.uint8), "not a typed table"),
    "not bytes": (np.zeros(4, np.float64), "1-D uint8"),
    "a length past the end": (np.frombuffer(TABLE_MAGIC + struct.pack("<Q", 2**40), np.uint8), "claims"),
    "not JSON": (wire(None, raw=b"{not json"), "not JSON"),
    "not UTF-8": (wire(None, raw=b"\xff\xfe"), "not JSON"),
    "deep JSON": (wire(None, raw=b"[" * 100_000 + b"]" * 100_000), "not JSON"),
    "not a table's keys": (wire({"columns": []}), "not a table's"),
    "negative rows": (wire(table([], rows=-1)), "rows is -1"),
    "rows as text": (wire(table([], rows="2")), "rows is '2'"),
    "a short buffer": (wire(table([numbers("<f8", 0, 8)]), b"\0" * 8), "8 bytes at 0 is not 2"),
    "a buffer past the end": (wire(table([numbers("<f8", 8, 16)]), b"\0" * 16), "within the 16 bytes"),
    "a negative offset": (wire(table([numbers("<u1", -1, 2)]), b"\0" * 4), "at -1"),
    "an object dtype": (wire(table([numbers("|O", 0, 16)]), b"\0" * 16), "dtype '|O'"),
    "a structured dtype": (wire(table([numbers([["x", "<f8"]], 0, 16)]), b"\0" * 16), "dtype"),
    "a dtype that is no dtype": (wire(table([numbers("nope", 0, 2)]), b"\0" * 2), "dtype 'nope'"),
    "a bool that is not 0 or 1": (wire(table([numbers("|b1", 0, 2)]), b"\x00\x07"), "other than 0 and 1"),
    "too few texts": (wire(table([texts("object", ["x"])])), "not 2 texts"),
    "numbers as text": (wire(table([texts("object", ["x", 5])])), "holds 5"),
    "an unknown missing": (wire(table([texts("str", ["x", {"missing": "?"}])])), "holds"),
    "a text dtype that is not": (wire(table([texts("float64", ["x", "y"])])), "not 2 texts"),
    "an unknown kind": (wire(table([column(kind="pickle")])), "kind 'pickle'"),
    "a name that is a list": (wire(table([{**texts("str", []), "name": ["x"]}], rows=0)),
                              "a column's name is"),
    "a code out of range": (wire(table([categorical(["p"], dtype="<i1", offset=0, nbytes=2)]), b"\x00\x05"),
                            "code out of 0..0"),
    "repeated categories": (wire(table([categorical(["p", "p"], dtype="<i1", offset=0, nbytes=2)]),
                                 b"\x00\x01"), "column 'a'"),
    "a mask that is no mask": (
        wire(table([column(kind="masked", dtype="Int8", data={"offset": 0, "nbytes": 2},
                           mask={"offset": 2, "nbytes": 2})]), b"\x00\x01\x00\x09"),
        "other than 0 and 1"),
    "a freq that is none": (
        wire(table([numbers("<f8", 0, 16)], index={**numbers("<M8[us]", 0, 16), "freq": "7Q"}), b"\0" * 16),
        "freq"),
    "days pandas does not hold": (wire(table([numbers("<M8[D]", 0, 16)]), b"\0" * 16), "not supported"),
}


@pytest.mark.parametrize("name", sorted(FORGED))
def test_forged_tables_are_refused_with_what_is_wrong(name: str) -> None:
    array, message = FORGED[name]
    with pytest.raises(CorruptDataError, match=message):
        decode_table(array, {"encoding": TABLE_ENCODING}, "x.csv")


def test_an_unknown_encoding_is_named() -> None:
    with pytest.raises(UnsupportedDataError, match="encoding 'pandas-split-json'; known: polystore-table-1"):
        decode_table(np.zeros(3, np.uint8), {"encoding": "pandas-split-json"}, "x.csv")


# -- what ImageJ's ResultsTables hold: refused when sent to Fiji -------------------------------------

IMAGEJ_REFUSES = {
    "a blank name": (pandas.DataFrame({"": [1.0], "b": [2.0]}), "column '' has no name"),
    "a space for a name": (pandas.DataFrame({" ": [1.0]}), "column ' ' has no name"),
    "names the same as text": (pandas.DataFrame({"1": [1.0], 1: [2.0]}), "repeats 1"),
    "a numeric Label": (pandas.DataFrame({"Label": [1, 2]}), "'Label' column holds ImageJ's row labels"),
    "integers beyond 2**53": (pandas.DataFrame({"n": np.array([2**53 + 1], np.int64)}), r"beyond 2\*\*53"),
    "complex numbers": (pandas.DataFrame({"c": [1 + 2j]}), "complex"),
    "a MultiIndex": (pandas.DataFrame([[1]], columns=pandas.MultiIndex.from_tuples([("a", "b")])),
                     "MultiIndex"),
}


@pytest.mark.parametrize("name", sorted(IMAGEJ_REFUSES))
def test_what_a_results_table_cannot_hold_is_refused_before_it_is_sent(name: str) -> None:
    from polystore_fiji.backend import FijiStreamingBackend

    frame, message = IMAGEJ_REFUSES[name]
    backend = FijiStreamingBackend(port=1)  # nothing listens: a refusal must come before any send
    try:
        with pytest.raises(UnsupportedDataError, match=message):
            backend.save(frame, "results/cells.csv")
    finally:
        backend.close()


def test_what_a_results_table_holds_passes_the_check() -> None:
    from polystore_fiji.tables import check_results_table

    check_results_table(pandas.DataFrame({
        "Label": ["a", "b"], "n": np.array([2**53, -(2**53)], np.int64), "x": [math.inf, math.nan],
        "t": ["x", None], "when": pandas.to_datetime(["2024-01-01", "2024-01-02"]),
    }), {})
    check_results_table(np.ones((2, 3)), {"columns": ["a", "b", "c"]})
    with pytest.raises(UnsupportedDataError, match="names 2 columns for a table of 3"):
        check_results_table(np.ones((2, 3)), {"columns": ["a", "b"]})
