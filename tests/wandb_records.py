"""Read an offline W&B run back (config, history, summary, tables) from its ``.wandb`` file, for the tests.

The records come from ``wandb_file.iter_records`` (the file format is described there).
Tables are not in the records themselves: a logged ``wandb.Table`` is a JSON file under
``files/media/table/`` that the history/summary entry points to; ``read_run`` loads those.
"""
from __future__ import annotations

import json
import os
from typing import Any

from wandb_file import (RUN_DIR_PREFIXES, WandbFormatError, _format_error, _wandb_file,  # noqa: F401
                                           iter_records, wait_until_written)


def _decode_json(text: str, wandb_file: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise _format_error(wandb_file, f"bad value_json {text[:80]!r}") from e


def _item_path(item) -> list[str]:
    return list(item.nested_key) if len(item.nested_key) else [item.key]


def _item_value(item, wandb_file: str) -> Any:
    if item.value_json:
        return _decode_json(item.value_json, wandb_file)
    # History items may carry a typed value instead of JSON text.
    which = item.WhichOneof("value") if "value" in {o.name for o in item.DESCRIPTOR.oneofs} else None
    if which is None or which == "none":
        return None
    if which == "json":
        return _decode_json(item.json, wandb_file)
    return getattr(item, which)


def _set_path(d: dict, path: list[str], value) -> None:
    for k in path[:-1]:
        nxt = d.get(k)
        if not isinstance(nxt, dict):
            nxt = d[k] = {}
        d = nxt
    d[path[-1]] = value


def _del_path(d: dict, path: list[str]) -> None:
    for k in path[:-1]:
        d = d.get(k)
        if not isinstance(d, dict):
            return
    d.pop(path[-1], None)


def _apply_updates(target: dict, rec, wandb_file: str) -> None:
    for item in rec.update:
        _set_path(target, _item_path(item), _item_value(item, wandb_file))
    for item in rec.remove:
        _del_path(target, _item_path(item))


# --------------------------------------------------------------------------- runs
def _load_table(files_dir: str, rel: str) -> dict | None:
    path = os.path.join(files_dir, rel)
    try:
        with open(path) as f:
            t = json.load(f)
    except (OSError, ValueError):
        return None
    return {"columns": list(t.get("columns", [])), "data": [list(r) for r in t.get("data", [])]}


def _collect_tables(obj: dict, prefix: str, out: dict) -> None:
    for k, v in obj.items():
        if not isinstance(v, dict):
            continue
        key = f"{prefix}{k}"
        if v.get("_type") in ("table-file", "partitioned-table", "joined-table") and "path" in v:
            out[key] = v["path"]
        else:
            _collect_tables(v, key + ".", out)


def read_run(run_dir_or_wandb_file) -> dict:
    """Everything an offline run recorded, as plain Python values.

    Returns ``{"id", "project", "entity", "name", "group", "job_type", "tags", "notes",
    "config", "summary", "history", "tables", "files", "exit_code", "run_dir", "wandb_file"}``:
    ``history`` has one dict per logged step (``_step``, ``_runtime``, ``_timestamp`` included),
    nested keys rebuilt as nested dicts; ``tables`` maps a logged key to its latest
    ``{"columns", "data"}``; ``files`` are paths relative to the run's ``files/`` folder;
    ``exit_code`` is None when the run never finished.
    """
    wandb_file = _wandb_file(run_dir_or_wandb_file)
    wait_until_written(wandb_file)
    run_dir = os.path.dirname(os.path.abspath(wandb_file))
    out: dict[str, Any] = {
        "id": None, "project": None, "entity": None, "name": None, "group": None, "job_type": None,
        "tags": [], "notes": None, "config": {}, "summary": {}, "history": [], "tables": {},
        "files": [], "exit_code": None, "run_dir": run_dir, "wandb_file": wandb_file,
    }
    table_paths: dict[str, str] = {}
    listed_files: set[str] = set()
    saw_run = False
    for rec in iter_records(wandb_file):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            saw_run = True
            out.update(id=r.run_id, project=r.project, entity=r.entity or None, name=r.display_name,
                       group=r.run_group or None, job_type=r.job_type or None, tags=list(r.tags),
                       notes=r.notes or None)
            _apply_updates(out["config"], r.config, wandb_file)
            _apply_updates(out["summary"], r.summary, wandb_file)
        elif kind == "config":
            _apply_updates(out["config"], rec.config, wandb_file)
        elif kind == "summary":
            _apply_updates(out["summary"], rec.summary, wandb_file)
        elif kind == "history":
            row: dict = {}
            for item in rec.history.item:
                _set_path(row, _item_path(item), _item_value(item, wandb_file))
            if "_step" not in row and rec.history.HasField("step"):
                row["_step"] = rec.history.step.num
            out["history"].append(row)
            _collect_tables(row, "", table_paths)
        elif kind == "files":
            listed_files.update(f.path for f in rec.files.files)
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    if not saw_run:
        raise _format_error(wandb_file, "no run record")
    for d in (out["config"], out["summary"]):
        d.pop("_wandb", None)
    _collect_tables(out["summary"], "", table_paths)  # the summary holds each key's latest table

    files_dir = os.path.join(run_dir, "files")
    on_disk = set()
    for root, _, names in os.walk(files_dir):
        for nm in names:
            on_disk.add(os.path.relpath(os.path.join(root, nm), files_dir).replace(os.sep, "/"))
    out["files"] = sorted(on_disk | listed_files)
    for key, rel in table_paths.items():
        t = _load_table(files_dir, rel)
        if t is not None:
            out["tables"][key] = t
    return out


def find_runs(root) -> list[str]:
    """Every W&B run folder (``offline-run-*`` / ``run-*`` holding a ``.wandb`` file) under ``root``."""
    runs = []
    for dirpath, dirnames, filenames in os.walk(os.fspath(root)):  # os.walk skips symlinked dirs
        name = os.path.basename(dirpath)
        if name.startswith(RUN_DIR_PREFIXES) and any(f.endswith(".wandb") for f in filenames):
            runs.append(dirpath)
            dirnames[:] = []
    return sorted(runs)
