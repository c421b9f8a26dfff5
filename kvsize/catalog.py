"""The built-in catalog: finding and loading model and GPU specs by name.

Built-in specs are YAML files under `configs/models/` and `configs/gpus/`,
one spec per file named `<id>.yaml`. An installed wheel carries them as
package data at `kvsize/configs/`; a source checkout (editable install, or
tests run from the repository) reads the top-level `configs/` folder instead.

The wheel also carries, built by hatch_build.py, a JSON twin of every spec and
an `index.json` of ids and aliases. With them, loading one spec reads the
small index and one JSON file and never imports PyYAML, which keeps start-up
short. Without them (a checkout), an id opens only its YAML file, and aliases
and near-miss spellings (`Llama3-70B`, `llama-3-70b`) read the id and aliases
of every YAML file with the C parser.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, TypeVar

from kvsize.errors import NotFoundError, SpecError
from kvsize.specs import (
    GpuSpec,
    ModelSpec,
    as_line_mapping,
    parse_gpu_spec,
    parse_model_spec,
    parse_yaml_mapping,
    read_spec_text,
)

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

SpecKind = Literal["models", "gpus"]
Spec = TypeVar("Spec", ModelSpec, GpuSpec)

_LIST_COMMAND = {"models": "kvsize models", "gpus": "kvsize gpus"}
_NOUN = {"models": "model", "gpus": "GPU"}


@lru_cache(maxsize=None)
def builtin_root() -> Traversable:
    """Return the folder holding the built-in `models/` and `gpus/` spec folders.

    An installed package on the file system has them beside this module, which
    is what `importlib.resources.files("kvsize")` would return; only a package
    imported from a zip file goes through importlib.resources, whose import
    costs more than the rest of a lookup.
    """
    here = Path(__file__).resolve().parent
    if (here / "configs").is_dir():
        return here / "configs"
    if (here.parent / "configs" / "models").is_dir():
        return here.parent / "configs"
    from importlib import resources

    return resources.files("kvsize").joinpath("configs")


def normalize_name(name: str) -> str:
    """Return a lookup key that ignores case, spaces, hyphens, underscores and dots.

    `Llama-3.1-70B`, `llama3_1_70b` and `llama31-70b` all give `llama3170b`;
    a test checks that no two catalog names collide under this key.
    """
    return "".join(name.strip().lower().replace("-", " ").replace("_", " ").replace(".", " ").split())


def _read_text(entry: Traversable, path: str) -> str:
    if isinstance(entry, Path):
        return read_spec_text(entry, path)
    try:
        return entry.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not valid UTF-8 text (byte {error.start}); save the file as UTF-8") from None
    except OSError as error:
        raise SpecError(f"{path}: cannot read the file: {error.strerror}") from None


def _spec_files(kind: SpecKind) -> Iterator[Traversable]:
    folder = builtin_root().joinpath(kind)
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".yaml") and entry.is_file():
            yield entry


def _display_path(kind: SpecKind, entry: Traversable) -> str:
    return f"configs/{kind}/{entry.name}"


def _parse(kind: SpecKind, text: str, path: str, expected_id: str | None, data: Any = None) -> ModelSpec | GpuSpec:
    mapping = parse_yaml_mapping(text, path) if data is None else as_line_mapping(data)
    spec = parse_model_spec(mapping, path) if kind == "models" else parse_gpu_spec(mapping, path)
    if expected_id is not None and spec.id != expected_id:
        raise SpecError(f"{path}: field 'id' is {spec.id!r} but the file is named {expected_id}.yaml; "
                        "the id must equal the file name")  # fmt: skip
    return spec


def load_spec_file(kind: SpecKind, path: str | Path) -> ModelSpec | GpuSpec:
    """Load and validate one spec file given by path; the id must equal the file name."""
    file_path = Path(path)
    if not os.path.lexists(file_path):
        raise NotFoundError(f"spec file not found: {path}", helpful=True)
    text = _read_text(file_path, str(path))
    return _parse(kind, text, str(path), file_path.stem)


@dataclass(frozen=True)
class _IndexEntry:
    id: str
    names: tuple[str, ...]


@lru_cache(maxsize=None)
def _packaged_index() -> dict[str, Any] | None:
    """Return the wheel's index of ids and aliases, or None in a source checkout."""
    entry = builtin_root().joinpath("index.json")
    if not entry.is_file():
        return None
    return json.loads(entry.read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _name_index(kind: SpecKind) -> tuple[_IndexEntry, ...]:
    """Read the id and aliases of every built-in spec of one kind."""
    packaged = _packaged_index()
    if packaged is not None:
        return tuple(_IndexEntry(spec_id, (spec_id, *aliases)) for spec_id, aliases in sorted(packaged[kind].items()))

    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    entries = []
    for entry in _spec_files(kind):
        try:
            data = yaml.load(_read_text(entry, entry.name), Loader=loader)
        except (yaml.YAMLError, SpecError):
            data = None
        spec_id = entry.name[: -len(".yaml")]
        names = [spec_id]
        if isinstance(data, dict):
            if isinstance(data.get("aliases"), list):
                names.extend(str(alias) for alias in data["aliases"])
            if isinstance(data.get("hf_id"), str):
                names.append(data["hf_id"])  # a Hugging Face repository id is a name too
        entries.append(_IndexEntry(spec_id, tuple(names)))
    return tuple(entries)


def _load_builtin(kind: SpecKind, spec_id: str) -> ModelSpec | GpuSpec:
    """Load one built-in spec, from its JSON twin when the wheel has one."""
    entry = builtin_root().joinpath(kind, f"{spec_id}.yaml")
    path = _display_path(kind, entry)
    twin = builtin_root().joinpath(kind, f"{spec_id}.json")
    if twin.is_file():
        return _parse(kind, "", path, spec_id, data=json.loads(twin.read_text(encoding="utf-8")))
    return _parse(kind, _read_text(entry, path), path, spec_id)


def catalog_ids(kind: SpecKind) -> list[str]:
    """Return the ids of all built-in specs of one kind, sorted."""
    return [entry.id for entry in _name_index(kind)]


def resolve_id(kind: SpecKind, name: str) -> str:
    """Return the built-in spec id that `name` refers to, by id, alias or spelling.

    Raises NotFoundError with the closest ids when nothing matches.
    """
    cleaned = name.strip()
    if not cleaned:
        raise NotFoundError(f"empty {_NOUN[kind]} name; run '{_LIST_COMMAND[kind]}' to list the catalog")

    exact = cleaned.lower()
    safe = exact.replace(".", "").replace("-", "").replace("_", "").isalnum() and exact.isascii()
    if safe and not exact.startswith(".") and builtin_root().joinpath(kind, f"{exact}.yaml").is_file():
        return exact

    index = _name_index(kind)
    key = normalize_name(cleaned)
    matches = {entry.id for entry in index for alias in entry.names if normalize_name(alias) == key}
    if len(matches) == 1:
        return matches.pop()
    if len(matches) > 1:
        raise NotFoundError(f"{_NOUN[kind]} name {name!r} is ambiguous: it matches {', '.join(sorted(matches))}; "
                            "give the id", helpful=True)  # fmt: skip

    import difflib

    by_key = {normalize_name(alias): entry.id for entry in index for alias in entry.names}
    close_keys = difflib.get_close_matches(key, list(by_key), n=3, cutoff=0.6)
    suggestions = list(dict.fromkeys(by_key[close] for close in close_keys))
    hint = f" (did you mean {', '.join(suggestions)}?)" if suggestions else ""
    raise NotFoundError(f"unknown {_NOUN[kind]} {name!r}{hint}; run '{_LIST_COMMAND[kind]}' to list the catalog",
                        helpful=bool(suggestions))  # fmt: skip


def _load(kind: SpecKind, name: str, parse_file: Callable[[str | Path], Spec]) -> Spec:
    looks_like_file = name.endswith((".yaml", ".yml")) or "/" in name or "\\" in name
    if looks_like_file and os.path.lexists(name):  # lexists: a symlink loop is reported, not skipped
        return parse_file(name)
    from kvsize.user_specs import find_user_spec

    user_path = find_user_spec(kind, name)
    if user_path is not None:
        return parse_file(user_path)
    try:
        spec_id = resolve_id(kind, name)
    except NotFoundError:
        # A Hugging Face repository name such as meta-llama/Llama-3.1-8B is an
        # alias, not a path; only when no alias matches is it a missing file.
        if looks_like_file:
            raise NotFoundError(f"no spec file and no {_NOUN[kind]} named {name!r}; give an existing YAML file "
                                f"or an id from '{_LIST_COMMAND[kind]}'", helpful=True) from None  # fmt: skip
        raise
    return _load_builtin(kind, spec_id)  # type: ignore[return-value]


def load_model(name: str) -> ModelSpec:
    """Load a model by id, alias, spec file, config.json or model folder, GGUF file or `hf:` id.

    User spec folders (kvsize.user_specs) are searched before the built-in catalog.
    """
    if not name.strip():
        raise NotFoundError("empty model name; give an id from 'kvsize models', a spec file or a model folder")
    from kvsize.model_sources import load_external_model

    external = load_external_model(name)
    if external is not None:
        return external
    return _load("models", name, lambda path: load_spec_file("models", path))  # type: ignore[arg-type,return-value]


def load_gpu(name: str) -> GpuSpec:
    """Load a GPU by id, alias or path to a spec file."""
    return _load("gpus", name, lambda path: load_spec_file("gpus", path))  # type: ignore[arg-type,return-value]


def iter_specs(kind: SpecKind) -> Iterator[ModelSpec | GpuSpec]:
    """Load and validate every built-in spec of one kind, in id order."""
    for spec_id in catalog_ids(kind):
        yield _load_builtin(kind, spec_id)


def catalog_with_user_specs(kind: SpecKind) -> tuple[list[ModelSpec | GpuSpec], list[str]]:
    """Return every spec of one kind a user can name, user specs first in precedence, sorted by id.

    A user spec replaces the built-in with the same id. A user spec file that
    fails to load is left out and described in the returned warnings, so one
    broken file does not hide the rest of the catalog.
    """
    from kvsize.user_specs import user_spec_files

    specs: dict[str, ModelSpec | GpuSpec] = {}
    warnings = []
    for spec_file in user_spec_files(kind):
        try:
            specs[spec_file.id] = load_spec_file(kind, spec_file.path)
        except (SpecError, NotFoundError) as error:
            warnings.append(f"skipped user spec: {error}")
    for spec_id in catalog_ids(kind):
        if spec_id not in specs:
            specs[spec_id] = _load_builtin(kind, spec_id)
    return [specs[spec_id] for spec_id in sorted(specs)], warnings
