"""User spec folders: model and GPU YAML specs kept outside the package.

Folders are searched in this order, and for an id found in several the first
wins:

1. folders given with the global `--config-dir` option (the CLI passes them
   to `set_cli_config_dirs`);
2. the folders in `KVSIZE_CONFIG_PATH`, separated by `os.pathsep` (`:` on
   Linux and macOS, `;` on Windows);
3. the user config folder: `$XDG_CONFIG_HOME/kvsize` or `~/.config/kvsize`
   on Linux and macOS, `%APPDATA%\\kvsize` on Windows.

A folder contains `models/<id>.yaml` and `gpus/<id>.yaml` like the built-in
`configs/`. YAML files at the folder's top level are also read, as a model
spec when they have `layer_types` and as a GPU spec when they have
`memory_reported_bytes`. A user spec whose id (or alias) matches a built-in
name replaces the built-in spec.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from kvsize.errors import InvalidInputError, NotFoundError, SpecError

SpecKind = Literal["models", "gpus"]

CONFIG_PATH_VARIABLE = "KVSIZE_CONFIG_PATH"

_cli_config_dirs: tuple[Path, ...] = ()


def set_cli_config_dirs(folders: Iterable[str | Path]) -> None:
    """Set the folders given on the command line; each must exist."""
    global _cli_config_dirs
    folders = list(folders)
    if any(not str(folder).strip() for folder in folders):
        raise InvalidInputError("invalid value for --config-dir: an empty path; give a folder of spec files")
    paths = tuple(Path(folder).expanduser() for folder in folders)
    for path in paths:
        if not path.is_dir():
            raise InvalidInputError(f"invalid value for --config-dir: {str(path)!r} is not a folder")
    _cli_config_dirs = paths


def user_config_dir() -> Path:
    """Return the platform's per-user config folder for kvsize (it may not exist)."""
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "kvsize"
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "kvsize"


def config_dirs() -> list[Path]:
    """Return the user spec folders that exist, in search order."""
    candidates: list[Path] = list(_cli_config_dirs)
    for entry in os.environ.get(CONFIG_PATH_VARIABLE, "").split(os.pathsep):
        if entry.strip():
            candidates.append(Path(entry.strip()).expanduser())
    candidates.append(user_config_dir())
    unique: list[Path] = []
    for path in candidates:
        if path.is_dir() and path not in unique:
            unique.append(path)
    return unique


@dataclass(frozen=True)
class UserSpecFile:
    """One user spec file: its id (the file name), the names that resolve to it, and its path."""

    id: str
    names: tuple[str, ...]
    path: Path


def _read_names(path: Path) -> tuple[dict | None, tuple[str, ...]]:
    """Read a spec file's mapping and aliases quickly, without validating it."""
    import yaml

    from kvsize.specs import read_spec_text

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(read_spec_text(path, str(path)), Loader=loader)
    except (SpecError, yaml.YAMLError):
        return None, ()
    if not isinstance(data, dict):
        return None, ()
    aliases = data.get("aliases")
    return data, tuple(str(alias) for alias in aliases) if isinstance(aliases, list) else ()


def _top_level_kind(data: dict | None) -> SpecKind | None:
    if data is None:
        return None
    if "layer_types" in data:
        return "models"
    if "memory_reported_bytes" in data:
        return "gpus"
    return None


def _scan_user_specs(kind: SpecKind) -> tuple[list[UserSpecFile], dict[str, tuple[Path, ...]]]:
    """Return the usable user spec files of one kind and the ids defined twice within one folder."""
    found: dict[str, UserSpecFile] = {}
    duplicates: dict[str, tuple[Path, ...]] = {}
    for folder in config_dirs():
        in_folder: dict[str, list[UserSpecFile]] = {}
        candidates = [(path, True) for path in sorted((folder / kind).glob("*.y*ml"))]
        candidates += [(path, False) for path in sorted(folder.glob("*.y*ml"))]
        for path, in_kind_folder in candidates:
            if path.suffix not in (".yaml", ".yml") or not path.is_file() or path.stem in found:
                continue
            data, aliases = _read_names(path)
            if not in_kind_folder and _top_level_kind(data) != kind:
                continue
            in_folder.setdefault(path.stem, []).append(UserSpecFile(path.stem, (path.stem, *aliases), path))
        for spec_id, spec_files in in_folder.items():
            if len(spec_files) > 1:
                duplicates.setdefault(spec_id, tuple(spec_file.path for spec_file in spec_files))
            elif spec_id not in duplicates:
                found[spec_id] = spec_files[0]
    return list(found.values()), duplicates


def user_spec_files(kind: SpecKind) -> list[UserSpecFile]:
    """Return the user spec files of one kind, one per id, the first folder's winning.

    Within one folder, two files with the same id (`x.yaml` and `x.yml`, or
    `models/x.yaml` and a top-level `x.yaml`) are ambiguous, so that id is left
    out here and `find_user_spec` rejects it by name.
    """
    return _scan_user_specs(kind)[0]


def find_user_spec(kind: SpecKind, name: str) -> Path | None:
    """Return the user spec file that `name` refers to, or None when no user spec matches.

    An exact id wins, then ids and aliases compared ignoring case and
    punctuation. A built-in alias whose id a user spec replaces also leads to
    the user's file.
    """
    from kvsize.catalog import normalize_name, resolve_id

    files, duplicates = _scan_user_specs(kind)
    cleaned = name.strip()
    if cleaned in duplicates:
        listed = " and ".join(str(path) for path in duplicates[cleaned])
        raise SpecError(f"two user spec files define the id {cleaned!r}: {listed}; rename or remove one")
    if not files:
        return None
    for spec_file in files:
        if spec_file.id == cleaned:
            return spec_file.path

    key = normalize_name(cleaned)
    matches = {spec_file.id: spec_file for spec_file in files
               for alias in spec_file.names if normalize_name(alias) == key}  # fmt: skip
    if len(matches) == 1:
        return next(iter(matches.values())).path
    if len(matches) > 1:
        paths = ", ".join(str(spec_file.path) for spec_file in matches.values())
        raise NotFoundError(f"name {name!r} is ambiguous: it matches the user specs {paths}; give the id", helpful=True)

    try:
        builtin_id = resolve_id(kind, cleaned)
    except (NotFoundError, SpecError):
        return None
    return next((spec_file.path for spec_file in files if spec_file.id == builtin_id), None)
