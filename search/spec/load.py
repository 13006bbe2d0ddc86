"""Loading a study: a TOML file or a bundled study by name, overrides applied, then validated.

Example:
    >>> spec = load_study("quickstart", n_trials=3)
    >>> spec.study.n_trials
    3
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import tomllib

from sparsearch._frames import is_frame
from sparsearch.errors import SpecError, unknown_choice
from sparsearch.search.spec.overrides import OVERRIDES
from sparsearch.search.spec.sections import SECTIONS, StudySection, StudySpec, parse_study

__all__ = ["apply_overrides", "bundled_studies", "load_study"]


def bundled_studies() -> dict[str, Path]:
    """Study files shipped with sparsearch, by name."""
    root = resources.files("sparsearch.studies")
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def _resolve_source(source: str | os.PathLike[str]) -> tuple[Path, dict[str, object]]:
    path = Path(source)
    if not path.suffix and not path.exists():
        studies = bundled_studies()
        if str(source) not in studies:
            raise unknown_choice("study (not a file, nor a bundled study)", str(source), studies)
        path = studies[str(source)]
    if not path.is_file():
        raise SpecError(f"study file {str(path)!r} does not exist (give a .toml path or a bundled study name)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"study file {str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"study file {str(path)!r} is not valid TOML: {exc}") from None
    return path, raw


def _set(raw: dict[str, object], section: str, key: str, value: object) -> None:
    """Set ``raw[section][key] = value``; a dotted key (``params.n_rows``) walks into nested tables."""
    target = raw.setdefault(section, {})
    if not isinstance(target, dict):
        raise SpecError(f"[{section}] must be a table, got {type(target).__name__}")
    path = key.split(".")
    for i, part in enumerate(path[:-1]):
        inner = target.setdefault(part, {})
        if not isinstance(inner, dict):
            raise SpecError(f"{'.'.join([section, *path[:i + 1]])} must be a table to set {key!r}")
        target = inner
    target[path[-1]] = value


def apply_overrides(raw: Mapping[str, object], overrides: Mapping[str, object]) -> dict[str, object]:
    """Apply keyword overrides (``n_trials=5``) and dotted ones (``{"train.epochs": 1}``) to a raw study dict."""
    import copy

    # an in-memory frame or a function objective is shared, never copied (a pandas frame would be)
    memo = {id(v): v for section in raw.values() if isinstance(section, dict) for v in section.values()
            if is_frame(v) or callable(v)}
    out = dict(copy.deepcopy(raw, memo))
    _drop_options_of_a_replaced_choice(out, overrides)
    for name, value in overrides.items():
        if value is None:
            continue
        if name == "objective":  # run_study(objective=fn or "module:function")
            _set(out, "study", "objective", value)
            continue
        if "." in name:
            section, _, key = name.partition(".")
            if section not in SECTIONS:
                raise unknown_choice("section", section, SECTIONS)
            _set(out, section, key, value)
        elif name in OVERRIDES:
            section, key = OVERRIDES[name].section, OVERRIDES[name].key
            if name == "data":
                data = out.setdefault("data", {})
                if isinstance(data, dict):  # not a table: _set names the error
                    for other in ("generator", "params", "path", "frame"):
                        data.pop(other, None)
                if is_frame(value):
                    key = "frame"
                elif isinstance(value, os.PathLike):
                    value = os.fspath(value)
            _set(out, section, key, value)
        else:
            raise unknown_choice("override", name, list(OVERRIDES) + ["objective", "<section>.<key>"])
    return out


def _drop_options_of_a_replaced_choice(raw: dict[str, object], overrides: Mapping[str, object]) -> None:
    """``sampler_params`` / ``pruner_params`` belong to the sampler / pruner the file names: an override that
    names another one (``--sampler random`` on a study that tunes TPE) runs it with its defaults, unless the
    overrides give its options too."""
    study = raw.get("study")
    if not isinstance(study, dict):
        return
    for choice in ("sampler", "pruner"):
        new = overrides.get(choice, overrides.get(f"study.{choice}"))
        given = f"study.{choice}_params" in overrides
        if new is not None and not given and new != study.get(choice, StudySection.model_fields[choice].default):
            study.pop(f"{choice}_params", None)


def load_study(source: str | os.PathLike[str] | dict[str, object], **overrides: object) -> StudySpec:
    """Load and validate a study from a TOML path, a bundled study name, or a raw dict.

    Args:
        source: a ``.toml`` path, the name of a bundled study (``"quickstart"``), or a dict of sections.
        **overrides: any key of :data:`OVERRIDES` (``n_trials=5``, ``sampler="random"``, ``data="x.parquet"``),
            or a dotted ``"section.key"`` passed through ``**{"train.epochs": 1}``. ``data`` may also be a polars
            or pandas DataFrame (or a polars LazyFrame), and ``objective`` a function or ``"module:function"``.

    Raises:
        SpecError: one line naming the file, the section, the key and what is allowed.
    """
    if isinstance(source, dict):
        raw, origin, stem = source, "study", "study"
    else:
        path, raw = _resolve_source(source)
        origin, stem = f"study file {path.name!r}", path.stem
    raw = apply_overrides(raw, overrides)
    return parse_study(raw, origin=origin, default_name=stem)
