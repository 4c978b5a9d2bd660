"""Config validation in one place: types and unknown keys (the schema merge), declared ranges, open groups.

``validate(cfg, schema.SweepApp)`` returns the typed config or raises a one-line :class:`UserError` naming the
key and what it must be.  Checks that need the checkpoint (its T, its resolution) live in :func:`check_steps`
and :func:`check_resolution`, called right after the checkpoint is loaded and before any sampling.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from ddim_bench import schema
from ddim_bench.errors import UserError

OPEN_GROUPS = {"data": schema.Data, "trainer": schema.Trainer}
TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}


def validate(cfg: DictConfig, app: type) -> DictConfig:
    """Merge ``cfg`` over the app's schema (types, unknown keys), then check every declared range."""
    try:
        typed = OmegaConf.merge(OmegaConf.structured(app), cfg)
    except ConfigKeyError as err:
        from ddim_bench.preflight import did_you_mean
        hint = did_you_mean(str(err.full_key), OmegaConf.structured(app))
        raise UserError(f"{err.full_key} is not a setting of this app; {hint or 'check the spelling'} "
                        f"(settings are listed in ddim_bench/schema.py)") from None
    except ValidationError as err:
        raise UserError(_type_message(err)) from None
    for name, spec_cls in OPEN_GROUPS.items():
        if name in typed and typed[name] is not None:
            check_open_group(typed, name, spec_cls)
    check_ranges(typed, app, "")
    return typed


def _type_message(err: ValidationError) -> str:
    if "is not a ListConfig" in err.msg:
        return f"{err.full_key}={err.value!s} must be a list, e.g. {err.full_key}=[{err.value!s}]"
    word = next((w for k, w in TYPE_WORDS.items() if k in err.msg), None)
    if word:
        return f"{err.full_key}={err.value!s} must be {word}"
    return f"{err.full_key}: {err.msg.splitlines()[0]}"


def _value(node, key: str, path: str):
    try:
        return node[key]
    except MissingMandatoryValue:
        raise UserError(f"{path} is not set; pass {path}=...") from None
    except OmegaConfBaseException as err:
        raise UserError(f"{path}: {str(err).splitlines()[0]}") from None


def check_ranges(node, cls: type, prefix: str) -> None:
    """Walk the dataclass ``cls`` over ``node``; each field's metadata (min/max/below/choices) is checked."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in node:
            continue
        path = f"{prefix}{f.name}"
        value = _value(node, f.name, path)
        sub = hints.get(f.name)
        if dataclasses.is_dataclass(sub) and isinstance(value, DictConfig):
            check_ranges(value, sub, path + ".")
            continue
        if isinstance(value, (ListConfig, list)) and "listed" in f.metadata:
            check_list(path, list(value), f.metadata["listed"])
        item = (typing.get_args(sub) or [None])[0]
        if dataclasses.is_dataclass(item) and isinstance(value, ListConfig):  # a list of groups (claims)
            for i, v in enumerate(value):
                for missing in sorted(OmegaConf.missing_keys(v)):
                    raise UserError(f"{missing} is not set; give it a value")
                check_ranges(v, item, f"{path}[{i}].")
            continue
        for v in (list(value) if isinstance(value, (ListConfig, list)) else [value]):
            check_value(path, v, f.metadata, value)


def check_list(path: str, items: list, rule: str) -> None:
    """One rule for every list setting: no value twice; empty only where empty means something (``or-empty``)."""
    if not items and rule != "or-empty":
        raise UserError(f"{path}=[] is empty; give at least one value")
    seen = []
    for v in items:
        if v in seen:
            raise UserError(f"{path}={items} lists {v} twice; give each value once")
        seen.append(v)


def check_value(path: str, v, meta, shown=None) -> None:
    shown = v if shown is None else shown
    shown = list(shown) if isinstance(shown, ListConfig) else shown
    if v is None:
        return
    if isinstance(v, float) and not math.isfinite(v):
        raise UserError(f"{path}={shown} must be a finite number")
    if "choices" in meta and v not in meta["choices"]:
        raise UserError(f"{path}={shown} must be one of {', '.join(str(c) for c in meta['choices'])}")
    if "min" in meta and v < meta["min"]:
        raise UserError(f"{path}={shown} must be >= {meta['min']}" + (f" ({meta['help']})" if meta.get("help") else ""))
    if "max" in meta and v > meta["max"]:
        raise UserError(f"{path}={shown} must be <= {meta['max']}" + (f" ({meta['help']})" if meta.get("help") else ""))
    if "below" in meta and v >= meta["below"]:
        raise UserError(f"{path}={shown} must be < {meta['below']}")


def check_open_group(cfg: DictConfig, name: str, known: type) -> None:
    """An open group: its known keys are typed and ranged; the rest must be parameters of its target."""
    node = cfg[name]
    fields = {f.name for f in dataclasses.fields(known)}
    try:
        typed = OmegaConf.merge(OmegaConf.structured(known),
                                {k: v for k, v in OmegaConf.to_container(node, resolve=False).items() if k in fields})
    except ValidationError as err:
        raise UserError(_type_message(err).replace(f"{err.full_key}", f"{name}.{err.full_key}", 1)) from None
    check_ranges(typed, known, name + ".")
    target = _target_of(name, node)
    params = inspect.signature(target).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    hints = _hints(target)
    for key in node:
        if key not in params and key not in ("_target_",) and not (name == "data" and key in ("name", "channels")):
            raise UserError(f"{name}.{key} is not a setting of {target.__name__}; "
                            f"known: {', '.join(k for k in params if k not in ('self', 'args', 'kwargs'))}")
        if key not in fields and key in hints:
            check_param_type(f"{name}.{key}", _value(node, key, f"{name}.{key}"), hints[key], target.__name__)


SIMPLE_TYPES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _hints(target) -> dict:
    try:
        return typing.get_type_hints(target.__init__)
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved is left to the target
        return {}


def check_param_type(path: str, value, hint, target: str) -> None:
    """A passed-through value against its parameter's annotation, where that is a plain bool/int/float/str (or
    Optional of one); other annotations are left to the target itself."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        plain = [a for a in args if a is not type(None)]
        hint = plain[0] if len(plain) == 1 else None
    if hint not in SIMPLE_TYPES:
        return
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise UserError(f"{path}={value} must be {SIMPLE_TYPES[hint]} ({target} takes {path.split('.')[-1]}: "
                        f"{hint.__name__})")


def check_trainer(trainer: dict) -> None:
    """Build ``pytorch_lightning.Trainer`` from the trainer group once (no logger, no checkpoints: nothing is
    written): a value it rejects is one line naming the key, with Lightning's own message, before any training."""
    import warnings

    import pytorch_lightning as pl

    def build(keys):
        with warnings.catch_warnings():  # the probe says nothing; the real Trainer warns where it should
            warnings.simplefilter("ignore")
            pl.Trainer(**{k: trainer[k] for k in keys}, logger=False, enable_checkpointing=False)
    try:
        build(list(trainer))
        return
    except Exception as err:  # noqa: BLE001 - whatever Lightning raises is its message to the user
        message = (str(err).strip().splitlines() or [type(err).__name__])[0]
    keys = list(trainer)
    for i in range(1, len(keys) + 1):  # the first key whose addition makes the Trainer refuse
        try:
            build(keys[:i])
        except Exception:  # noqa: BLE001
            raise UserError(f"trainer.{keys[i - 1]}={trainer[keys[i - 1]]}: {message}") from None
    raise UserError(f"trainer: {message}")


def _target_of(name: str, node):
    if name == "trainer":
        import pytorch_lightning as pl
        return pl.Trainer
    from hydra.utils import get_class
    try:
        return get_class(node._target_)
    except Exception:  # noqa: BLE001 - any import failure is a config error
        raise UserError(f"{name}._target_={node._target_} cannot be imported; pick one of conf/{name}/*.yaml") from None


def check_steps(steps: list[int], num_timesteps: int, key: str) -> None:
    """Step counts against the checkpoint's own T (known only once it is loaded)."""
    for s in steps:
        if not 1 <= s <= num_timesteps:
            raise UserError(f"{key}={s} must be in [1, {num_timesteps}] (the checkpoint's T)")


def check_schedule(cfg_diffusion, schedule: dict, checkpoint: str, overridden: set[str]) -> None:
    """A ``diffusion`` override (``overridden``: the keys set on the command line, ``*`` for the whole group) that
    differs from the checkpoint's own schedule is refused, not silently ignored."""
    given = OmegaConf.to_container(cfg_diffusion, resolve=True)
    for key, value in schedule.items():
        if not ({key, "*"} & overridden):
            continue
        if key in given and given[key] != value and not _close(given[key], value):
            raise UserError(f"diffusion.{key}={given[key]} differs from the checkpoint's own {key}={value} "
                            f"({checkpoint}); drop the override (the checkpoint's schedule is always used)")


def _close(a, b) -> bool:
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9)


def check_resolution(data_shape: tuple, model_shape: tuple, data_name: str, checkpoint: str = "") -> None:
    if tuple(data_shape) != tuple(model_shape):
        model = f"checkpoint={checkpoint}" if checkpoint else "the checkpoint's model"
        other = ", or pass a checkpoint made for these images" if checkpoint else ""
        raise UserError(f"data={data_name} gives images of shape {tuple(data_shape)} but {model} "
                        f"takes {tuple(model_shape)}; set data.resolution (or data=) to match the checkpoint{other}")


def check_accelerator(key: str, value: str) -> None:
    import torch
    if value in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(f"{key}={value} but this machine has no GPU; use {key}=cpu")
