"""Models given as files other than kvsize specs: Hugging Face configs, model folders, GGUF files, `hf:` ids.

`imported_model_fields` returns the spec mapping for any of them (what
`kvsize import` prints), and `load_external_model` the validated ModelSpec.
For any other name (a catalog id, a spec YAML) it returns None, and the
catalog resolves the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvsize.specs import ModelSpec

GGUF_SUFFIX = ".gguf"


@dataclass(frozen=True)
class ImportedModel:
    """Spec fields read from a model's own files, and the file they were read from."""

    fields: dict[str, Any]
    path: str


def is_external_source(name: str) -> bool:
    """Return whether `name` is an `hf:` id, a .gguf or .json file, or an existing folder."""
    # The prefix is spelled out rather than imported from kvsize.hf_hub, whose
    # imports would slow down every lookup of a catalog id.
    if name.startswith("hf:"):
        return True
    if name.lower().endswith((GGUF_SUFFIX, ".json")):
        return True
    return Path(name).is_dir()


def _default_id(path: Path) -> str:
    from kvsize.spec_builder import slugify_id

    return slugify_id(path.parent.name if path.name == "config.json" else path.stem)


def imported_model_fields(name: str, model_id: str | None = None) -> ImportedModel:
    """Read the spec fields of an external model; `model_id` replaces the id derived from its name."""
    from kvsize.hf_config import HfModelFiles, find_config_file, model_fields_from_hf_config, read_json_object
    from kvsize.hf_hub import HUB_PREFIX, fetch_model_files, parse_hub_reference
    from kvsize.spec_builder import slugify_id

    if name.startswith(HUB_PREFIX):
        repo_id, _ = parse_hub_reference(name)
        files = fetch_model_files(name)
        config = read_json_object(files.config_path, files.display_path)
        fields = model_fields_from_hf_config(config, files, model_id or slugify_id(repo_id.split("/")[1]), repo_id)
        return ImportedModel(fields, str(files.config_path))

    if name.lower().endswith(GGUF_SUFFIX):
        from kvsize.gguf_spec import model_fields_from_gguf

        path = Path(name)
        return ImportedModel(model_fields_from_gguf(path, model_id or slugify_id(path.stem)), str(path))

    config_path = find_config_file(Path(name))
    files = HfModelFiles.beside(config_path, display_path=str(config_path))
    config = read_json_object(config_path, str(config_path))
    display_name = config_path.parent.name if config_path.name == "config.json" else config_path.stem
    fields = model_fields_from_hf_config(config, files, model_id or _default_id(config_path),
                                         display_name or "imported model")  # fmt: skip
    return ImportedModel(fields, str(config_path))


def load_external_model(name: str) -> ModelSpec | None:
    """Load an `hf:` id, config.json, model folder or GGUF file as a ModelSpec; None for other names."""
    if not is_external_source(name):
        return None
    from kvsize.spec_builder import build_model_spec

    imported = imported_model_fields(name)
    return build_model_spec(imported.fields, imported.path)
