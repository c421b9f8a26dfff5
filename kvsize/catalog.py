"""The built-in catalog: finding and loading model and GPU specs by name.

Built-in specs are YAML files under `configs/models/` and `configs/gpus/`,
one spec per file named `<id>.yaml`. An installed wheel carries them as
package data at `kvsize/configs/`, read through `importlib.resources`; a source
checkout (editable install, or tests run from the repository) reads the
top-level `configs/` folder instead.

Looking up an id opens only that file. Aliases and near-miss spellings
(`Llama3-70B`, `llama-3-70b`) need the id and aliases of every spec, which are
read with the C YAML parser without validating the rest.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Callable, Iterator, Literal, TypeVar

from kvsize.errors import NotFoundError, SpecError
from kvsize.specs import GpuSpec, ModelSpec, parse_gpu_spec, parse_model_spec, parse_yaml_mapping

SpecKind = Literal["models", "gpus"]
Spec = TypeVar("Spec", ModelSpec, GpuSpec)

_LIST_COMMAND = {"models": "kvsize models", "gpus": "kvsize gpus"}
_NOUN = {"models": "model", "gpus": "GPU"}


@lru_cache(maxsize=None)
def builtin_root() -> Traversable:
    """Return the folder holding the built-in `models/` and `gpus/` spec folders."""
    packaged = resources.files("kvsize").joinpath("configs")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "configs"


def normalize_name(name: str) -> str:
    """Return a lookup key that ignores case, spaces, hyphens and underscores."""
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def _read_text(entry: Traversable, path: str) -> str:
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


def _parse(kind: SpecKind, text: str, path: str, expected_id: str | None) -> ModelSpec | GpuSpec:
    mapping = parse_yaml_mapping(text, path)
    spec = parse_model_spec(mapping, path) if kind == "models" else parse_gpu_spec(mapping, path)
    if expected_id is not None and spec.id != expected_id:
        raise SpecError(f"{path}: field 'id' is {spec.id!r} but the file is named {expected_id}.yaml; "
                        "the id must equal the file name")  # fmt: skip
    return spec


def load_spec_file(kind: SpecKind, path: str | Path) -> ModelSpec | GpuSpec:
    """Load and validate one spec file given by path; the id must equal the file name."""
    file_path = Path(path)
    if not file_path.is_file():
        raise NotFoundError(f"spec file not found: {path}")
    text = _read_text(file_path, str(path))
    return _parse(kind, text, str(path), file_path.stem)


@dataclass(frozen=True)
class _IndexEntry:
    id: str
    names: tuple[str, ...]


@lru_cache(maxsize=None)
def _name_index(kind: SpecKind) -> tuple[_IndexEntry, ...]:
    """Read the id and aliases of every built-in spec of one kind."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    entries = []
    for entry in _spec_files(kind):
        try:
            data = yaml.load(_read_text(entry, entry.name), Loader=loader)
        except (yaml.YAMLError, SpecError):
            data = None
        spec_id = entry.name[: -len(".yaml")]
        aliases = data.get("aliases") if isinstance(data, dict) else None
        names = [spec_id]
        if isinstance(aliases, list):
            names.extend(str(alias) for alias in aliases)
        entries.append(_IndexEntry(spec_id, tuple(names)))
    return tuple(entries)


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
    if re.fullmatch(r"[a-z0-9][a-z0-9._\-]*", exact) and builtin_root().joinpath(kind, f"{exact}.yaml").is_file():
        return exact

    index = _name_index(kind)
    key = normalize_name(cleaned)
    matches = {entry.id for entry in index for alias in entry.names if normalize_name(alias) == key}
    if len(matches) == 1:
        return matches.pop()
    if len(matches) > 1:
        raise NotFoundError(f"{_NOUN[kind]} name {name!r} is ambiguous: it matches {', '.join(sorted(matches))}; "
                            "give the id")  # fmt: skip

    by_key = {normalize_name(alias): entry.id for entry in index for alias in entry.names}
    close_keys = difflib.get_close_matches(key, list(by_key), n=3, cutoff=0.6)
    suggestions = list(dict.fromkeys(by_key[close] for close in close_keys))
    hint = f" (did you mean {', '.join(suggestions)}?)" if suggestions else ""
    raise NotFoundError(f"unknown {_NOUN[kind]} {name!r}{hint}; run '{_LIST_COMMAND[kind]}' to list the catalog")


def _load(kind: SpecKind, name: str, parse_file: Callable[[str | Path], Spec]) -> Spec:
    looks_like_file = name.endswith((".yaml", ".yml")) or "/" in name or "\\" in name
    if looks_like_file and Path(name).exists():
        return parse_file(name)
    try:
        spec_id = resolve_id(kind, name)
    except NotFoundError:
        # A Hugging Face repository name such as meta-llama/Llama-3.1-8B is an
        # alias, not a path; only when no alias matches is it a missing file.
        if looks_like_file:
            raise NotFoundError(f"no spec file and no {_NOUN[kind]} named {name!r}; give an existing YAML file "
                                f"or an id from '{_LIST_COMMAND[kind]}'") from None  # fmt: skip
        raise
    entry = builtin_root().joinpath(kind, f"{spec_id}.yaml")
    path = _display_path(kind, entry)
    return _parse(kind, _read_text(entry, path), path, spec_id)  # type: ignore[return-value]


def load_model(name: str) -> ModelSpec:
    """Load a model by id, alias or path to a spec file."""
    return _load("models", name, lambda path: load_spec_file("models", path))  # type: ignore[arg-type,return-value]


def load_gpu(name: str) -> GpuSpec:
    """Load a GPU by id, alias or path to a spec file."""
    return _load("gpus", name, lambda path: load_spec_file("gpus", path))  # type: ignore[arg-type,return-value]


def iter_specs(kind: SpecKind) -> Iterator[ModelSpec | GpuSpec]:
    """Load and validate every built-in spec of one kind, in id order."""
    for entry in _spec_files(kind):
        path = _display_path(kind, entry)
        yield _parse(kind, _read_text(entry, path), path, entry.name[: -len(".yaml")])
