"""Read an offline W&B run (`wandb/offline-run-*/run-<id>.wandb`) without a server.

The file is a LevelDB-style log of protobuf `Record`s: a 7-byte header, then 32 KiB blocks of
chunks, each with a 7-byte header (crc32c, little-endian length, type). wandb >= 0.19 no longer
ships a Python reader, and the run config exists only inside this file (no files/config.yaml).
"""

from __future__ import annotations

import glob
import json
import os
import struct
from collections.abc import Iterator

_FILE_HEADER = 7  # b":W&B", magic 0xBEE1, version
_BLOCK = 32 * 1024
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_records(path: str) -> Iterator[bytes]:
    """Yield each record's serialized bytes, reassembling records split across blocks."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run log (bad magic {data[:4]!r})")
    pos, parts = _FILE_HEADER, []
    while pos + _CHUNK_HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _CHUNK_HEADER])
        chunk = data[pos + _CHUNK_HEADER : pos + _CHUNK_HEADER + length]
        pos += _CHUNK_HEADER + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += _BLOCK - pos % _BLOCK if pos % _BLOCK else 0
            continue
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            parts = [chunk]
        elif kind == _MIDDLE:
            parts.append(chunk)
        elif kind == _LAST:
            parts.append(chunk)
            yield b"".join(parts)
            parts = []


def read_offline_run(run_dir: str) -> dict:
    """Config, history rows and summary of an offline run folder.

    Returns:
        {"id", "group", "job_type", "tags", "config": nested dict, "history": [row dicts],
        "summary": dict}.
    """
    from wandb.proto import wandb_internal_pb2

    files = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    if not files:
        raise FileNotFoundError(
            f"no run-*.wandb file in {run_dir}; is it an offline W&B run folder?"
        )
    run = {"id": None, "group": "", "job_type": "", "tags": [], "config": {}, "history": [],
           "summary": {}}  # fmt: skip
    for raw in iter_records(files[0]):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run["id"] = rec.run.run_id
            run.update(group=rec.run.run_group, job_type=rec.run.job_type, tags=list(rec.run.tags))
            run["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            run["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            run["history"].append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            run["summary"].update({_key(i): json.loads(i.value_json) for i in rec.summary.update})
    return run


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)
