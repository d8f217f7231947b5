"""The native range reader behind the Kafka source (native/kafka_reader, a Rust extension).

Through confluent-kafka each record costs a Python ``Message`` object and half a dozen
accessor calls, which bounds a DLQ read at ~80k records/s. The extension drives the same
librdkafka confluent-kafka loaded (found in this process' memory map, so protocol,
security and compression support are identical) with the same read-only settings
(assign() to explicit offset ranges, no subscribe, no commit), decodes records in native
code and returns Arrow-ready column buffers.

Rows the extension does not decode with certainty (a payload that is not a plain UTF-8
JSON object, a repeated header name, a field that is not a string, a time that is not a
number) come back listed, and are decoded here by the Python reference decoders of
:mod:`forensics.sources.kafka`, so both readers give identical frames (pinned by the
integration tests, which run every read through both).

``FORENSICS_KAFKA_READER``: ``auto`` (default: native when built), ``native`` (required:
a clear error when missing) or ``python`` (confluent-kafka only).
"""

from __future__ import annotations

import glob
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Generator
from functools import cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forensics.config import Limits
from forensics.errors import SourceError
from forensics.sources import kafka_records

READER_ENV = "FORENSICS_KAFKA_READER"
BATCH_ROWS = 65_536
"""Records per native batch (a batch also ends at 1 GiB in one column). Text columns come
as Arrow large_string (64-bit offsets), the storage of pandas' Arrow-backed strings."""

_FIELDS = ("message_id", "conversation_id", "channel", "event_type", "event_time")
"""Field numbers of the extension's ``python_fields`` rows."""


def reader_choice() -> str:
    choice = os.environ.get(READER_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "native", "python"):
        raise SourceError("kafka", f"{READER_ENV}={choice!r} is not one of auto, native, python")
    return choice


@cache
def librdkafka_path() -> str | None:
    """The librdkafka shared library confluent-kafka loaded into this process, else None."""
    import confluent_kafka.cimpl  # noqa: F401  (maps librdkafka into the process)

    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if "librdkafka" in os.path.basename(path) and os.path.exists(path):
                    return path
    except OSError:
        pass
    import confluent_kafka

    libs = os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), "confluent_kafka.libs")
    found = sorted(glob.glob(os.path.join(libs, "librdkafka*.so*")))
    return found[0] if found else None


def native_module():
    """The extension module when it is built and wanted, else None (the Python reader is used)."""
    choice = reader_choice()
    if choice == "python":
        return None
    try:
        import forensics_kafka_native
    except ImportError as exc:
        if choice == "native":
            raise SourceError("kafka", f"{READER_ENV}=native but the native reader is not installed ({exc})",
                              "run scripts/setup-venv.sh (it builds native/kafka_reader with cargo)") from exc
        return None
    if librdkafka_path() is None:
        if choice == "native":
            raise SourceError("kafka", "the native reader cannot find the librdkafka confluent-kafka loaded")
        return None
    return forensics_kafka_native


def _librdkafka_config(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Consumer settings as librdkafka strings (Python objects such as the logger left out)."""
    items = []
    for key, value in config.items():
        if isinstance(value, bool):
            items.append((key, "true" if value else "false"))
        elif isinstance(value, (str, int, float)):
            items.append((key, str(value)))
    return items


# ---- column buffers -> Arrow ----------------------------------------------------------------

def _validity(col: dict[str, Any]) -> pa.Buffer | None:
    return pa.py_buffer(col["validity"]) if col["nulls"] else None


def _numbers(col: dict[str, Any], rows: int, dtype: pa.DataType) -> pa.Array:
    return pa.Array.from_buffers(dtype, rows, [_validity(col), pa.py_buffer(col["values"])], null_count=col["nulls"])


def _strings(col: dict[str, Any], rows: int) -> pa.Array:
    return pa.Array.from_buffers(pa.large_string(), rows,
                                 [_validity(col), pa.py_buffer(col["offsets"]), pa.py_buffer(col["data"])],
                                 null_count=col["nulls"])


def _replaced(array: pa.Array, rows: list[int], values: pa.Array) -> pa.Array:
    """``array`` with the values at ``rows`` (ascending) replaced by ``values``."""
    mask = np.zeros(len(array), dtype=bool)
    mask[rows] = True
    return pc.replace_with_mask(array, pa.array(mask), values)


def _patched(array: pa.Array, patches: dict[int, Any]) -> pa.Array:
    """``array`` with the values at the given rows replaced (Python values of its type)."""
    if not patches:
        return array
    rows = sorted(patches)
    return _replaced(array, rows, pa.array([patches[r] for r in rows], array.type))


def batch_columns(batch: dict[str, Any], headers: bool, max_bytes: int) -> dict[str, pa.Array]:
    """One native batch -> the columns the Python path's ``raw_columns`` gives."""
    rows = batch["rows"]
    cols: dict[str, pa.Array] = {
        "topic": _strings(batch["topic"], rows),
        "partition": _numbers(batch["partition"], rows, pa.int32()).cast(pa.int64()),
        "offset": _numbers(batch["offset"], rows, pa.int64()),
        "timestamp": _numbers(batch["timestamp"], rows, kafka_records.UTC_NS),
        "key": _strings(batch["key"], rows),
        "source_ref": _strings(batch["source_ref"], rows),
    }
    if headers:
        text = {c: _strings(batch[c], rows) for c in ("headers", "original_topic", "exception_class",
                                                      "exception_message")}
        ints = {c: _numbers(batch[c], rows, pa.int64()) for c in ("original_partition", "original_offset")}
        ints["original_timestamp"] = _numbers(batch["original_timestamp"], rows, kafka_records.UTC_NS)
        patches: dict[str, dict[int, Any]] = {c: {} for c in (*text, *ints)}
        cache: dict = {}
        for row, pairs in batch["python_header_rows"]:
            patches["headers"][row], found = kafka_records.decode_headers(pairs, cache)
            for column, value in found.items():
                patches[column][row] = value
        ms = patches.pop("original_timestamp")  # decode_headers gives epoch ms; the column holds ns
        cols.update({c: _patched(a, patches[c]) for c, a in {**text, **ints}.items() if c in patches})
        if ms:
            rows_ms = sorted(ms)
            cols["original_timestamp"] = _replaced(ints["original_timestamp"], rows_ms,
                                                   kafka_records.ms_times([ms[r] for r in rows_ms]))
        else:
            cols["original_timestamp"] = ints["original_timestamp"]

    fields = {c: _strings(batch[c], rows) for c in _FIELDS[:4]}
    payload = _strings(batch["payload"], rows)
    times = _numbers(batch["event_time"], rows, kafka_records.UTC_NS)
    field_patches: dict[str, dict[int, Any]] = {c: {} for c in fields}
    payload_patches: dict[int, Any] = {}
    errors: dict[int, Any] = {}
    time_patches: dict[int, Any] = {}
    for row, value in batch["python_payload_rows"]:
        d = kafka_records.decode_payload(value, max_bytes)
        payload_patches[row], errors[row] = d.text, d.error
        if d.fields:
            for column, keys in kafka_records.PAYLOAD_KEYS.items():
                field_patches[column][row] = kafka_records.field_text(next((d.fields[k] for k in keys
                                                                     if d.fields.get(k) is not None), None))
            time_patches[row] = d.fields.get(kafka_records.PAYLOAD_TIME_KEY)
    for row, field, raw in batch["python_fields"]:
        value = json.loads(raw)
        if _FIELDS[field] == "event_time":
            time_patches[row] = value
        else:
            field_patches[_FIELDS[field]][row] = kafka_records.field_text(value)
    cols.update({c: _patched(a, field_patches[c]) for c, a in fields.items()})
    if time_patches:  # coerce_timestamps works value by value: the patched rows alone
        rows_patched = sorted(time_patches)
        times = _replaced(times, rows_patched, kafka_records.utc_times([time_patches[r] for r in rows_patched]))
    cols["event_time"] = times
    cols["payload"] = _patched(payload, payload_patches)
    cols["payload_bytes"] = _numbers(batch["payload_bytes"], rows, pa.int64())
    cols["decode_error"] = _patched(pa.nulls(rows, pa.large_string()), errors)
    return cols


def _split(todo: list[tuple[str, int, int, int]], readers: int) -> list[list[tuple[str, int, int, int]]]:
    """Ranges dealt to ``readers`` consumers with as many records each as can be: in order,
    a range that straddles a share's boundary is cut at an offset (each consumer assigns its
    own part of the partition, so one partition can be read by two). Empty shares dropped.
    """
    total = sum(end - start for _t, _p, start, end in todo)
    shares: list[list[tuple[str, int, int, int]]] = [[] for _ in range(max(1, min(readers, total)))]
    quota = -(-total // len(shares))  # ceil
    share, room = 0, quota
    for topic, partition, start, end in todo:
        while start < end:
            take = min(room, end - start)
            shares[share].append((topic, partition, start, start + take))
            start += take
            room -= take
            if room == 0 and share + 1 < len(shares):
                share, room = share + 1, quota
    return [s for s in shares if s]


def reader_count(partitions: int = 4) -> int:
    """Native consumers to run side by side: one per core, at most 4 and one per partition
    (``FORENSICS_KAFKA_READERS`` overrides)."""
    wanted = os.environ.get("FORENSICS_KAFKA_READERS")
    if wanted:
        try:
            n = int(wanted)
        except ValueError:
            raise SourceError("kafka", f"FORENSICS_KAFKA_READERS={wanted!r} is not a whole number") from None
    else:
        n = min(os.cpu_count() or 1, 4)
    return max(1, min(n, partitions))


class _Budget:
    """The record cap shared by the readers: a reader claims what it asks for, returns the rest."""

    def __init__(self, cap: int) -> None:
        self.left = cap
        self.lock = threading.Lock()

    def claim(self, n: int) -> int:
        with self.lock:
            got = min(n, self.left)
            self.left -= got
            return got

    def give_back(self, n: int) -> None:
        with self.lock:
            self.left += n


def open_readers(module, config: dict[str, Any], headers: bool, max_bytes: int) -> list:
    """``reader_count()`` native consumers (the ones that get no records are closed by
    :func:`scan`; closing twice is harmless). Opened once the offsets are known: a consumer
    left unassigned for a while before its assign() was seen to read slower."""
    try:
        return [module.RangeReader(librdkafka_path(), _librdkafka_config(config), headers, max_bytes)
                for _ in range(reader_count())]
    except (RuntimeError, ValueError) as exc:
        raise SourceError("kafka", f"native reader: {exc}") from exc


def scan(readers: list, ranges: list[dict[str, Any]], limits: Limits, headers: bool, max_bytes: int,
         finish: Callable[[dict[str, pa.Array]], pa.RecordBatch],
         progress: Callable[[str], None] | None = None) -> Generator[pa.RecordBatch, None, str | None]:
    """Read every non-empty range with ``readers`` (from :func:`open_readers`, closed here),
    yielding the ``finish``-ed batches as they arrive; returns why the read was truncated, or
    None. Sets each range's ``records``.

    The ranges are dealt to the readers, each on its own thread (the extension releases the
    GIL while it reads and decodes); this thread turns their batches into Arrow columns and
    ``finish`` es them as they arrive. Batches come in arrival order, not offset order; a
    consumer that holds them back holds the readers back too (their queue holds 8 batches),
    so memory stays a few batches however many records the ranges hold.
    """
    todo = [(r["topic"], r["partition"], r["start_offset"], r["end_offset"]) for r in ranges
            if r["end_offset"] > r["start_offset"]]
    for r in ranges:
        r["records"] = 0
    shares = _split(todo, len(readers))
    for spare in readers[len(shares):]:
        spare.close()
    readers = readers[:len(shares)]
    if not readers:
        return None
    try:
        for reader, share in zip(readers, shares, strict=True):
            reader.assign(share)
    except RuntimeError as exc:
        for reader in readers:
            reader.close()
        raise SourceError("kafka", f"native reader: {exc}") from exc
    deadline = time.monotonic() + limits.timeout_s
    budget = _Budget(limits.max_rows)
    batches: queue.Queue = queue.Queue(maxsize=8)
    stop = threading.Event()
    capped = threading.Event()
    timed_out = threading.Event()

    def read(reader) -> None:
        try:
            while not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out.set()
                    break
                want = budget.claim(BATCH_ROWS)
                if want == 0:
                    capped.set()
                    break
                batch = reader.next_batch(want, min(left, 1.0))
                if batch is None:
                    budget.give_back(want)
                    break
                budget.give_back(want - batch["rows"])
                if batch["rows"]:
                    batches.put(batch)
        except BaseException as exc:  # handed to the caller's thread
            batches.put(exc)
        finally:
            batches.put(None)

    threads = [threading.Thread(target=read, args=(r,), name=f"kafka-native-{i}", daemon=True)
               for i, r in enumerate(readers)]
    for t in threads:
        t.start()
    total, running, failure = 0, len(threads), None
    try:
        while running:
            item = batches.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                failure = failure or item
                stop.set()
            elif failure is None:
                total += item["rows"]
                if progress:
                    progress(f"kafka: {total} records read")
                yield finish(batch_columns(item, headers, max_bytes))
    finally:
        stop.set()
        while running:  # a consumer that stopped early: drain, so no reader waits on a full queue
            running -= batches.get() is None
        for t in threads:
            t.join()
        for r in readers:
            r.close()
    if failure is not None:
        if isinstance(failure, RuntimeError):
            raise SourceError("kafka", str(failure)) from failure
        raise failure
    counts: dict[tuple[str, int], int] = {}
    for reader in readers:  # a partition cut between readers counts in each
        for t, p, n in reader.records:
            counts[t, p] = counts.get((t, p), 0) + n
    for r in ranges:
        r["records"] = counts.get((r["topic"], r["partition"]), 0)
    done = all(r.open_ranges == 0 for r in readers)
    truncated = None
    if not done and capped.is_set():
        truncated = f"record cap of {limits.max_rows} reached"
    elif not done and timed_out.is_set():
        truncated = f"wall-clock cap of {limits.timeout_s:g} s reached"
    return truncated
