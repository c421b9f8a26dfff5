"""Commands for bringing your own specs: `import` and `schema`.

Imported at the end of kvsize.cli, which registers the commands on its app.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from kvsize.cli import app
from kvsize.errors import InvalidInputError

_SPEC_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")


def _output_file(output: str, model_id: str | None) -> tuple[Path, str | None]:
    """Return the file to write and the id it implies: a folder gets `<id>.yaml`, a file names the id."""
    path = Path(output)
    if path.is_dir():
        return path, model_id
    if path.suffix not in (".yaml", ".yml"):
        raise InvalidInputError(f"invalid value for --output: {output!r}; give a .yaml file or an existing folder")
    if model_id is not None and path.stem != model_id:
        raise InvalidInputError(f"--id {model_id!r} and --output {output!r} disagree: a spec file must be named "
                                "<id>.yaml; drop one of them")  # fmt: skip
    return path, path.stem


@app.command("import")
def import_spec(
    source: Annotated[str, typer.Argument(help="A Hugging Face config.json or model folder, a .gguf file, or hf:ORG/NAME.")],
    model_id: Annotated[Optional[str], typer.Option("--id", help="Id of the spec (default: from the folder, file or repository name).")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write the YAML to this .yaml file, or to <id>.yaml in this folder, instead of stdout.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
) -> None:
    """Print (or write) the kvsize spec YAML of a model read from its own files, for review and commit."""
    from kvsize.model_sources import imported_model_fields, is_external_source
    from kvsize.spec_builder import build_model_spec, model_spec_yaml

    if model_id is not None and not _SPEC_ID.fullmatch(model_id):
        raise InvalidInputError(f"invalid value for --id: {model_id!r}; use lower-case letters, digits, '.', "
                                "'-' and '_', starting with a letter or digit")  # fmt: skip
    if not is_external_source(source):
        raise InvalidInputError(f"cannot import {source!r}: give a config.json, a model folder, a .gguf file "
                                "or hf:ORG/NAME (spec YAML files need no import)")  # fmt: skip
    target: Path | None = None
    if output is not None:
        target, implied_id = _output_file(output, model_id)
        model_id = model_id or implied_id

    imported = imported_model_fields(source, model_id)
    spec = build_model_spec(imported.fields, imported.path)
    text = f"# Imported by kvsize from {imported.path}; review before committing.\n" + model_spec_yaml(imported.fields)

    if target is None:
        sys.stdout.write(text)
        return
    if target.is_dir():
        target = target / f"{spec.id}.yaml"
    if target.exists() and not force:
        raise InvalidInputError(f"{target} already exists; pass --force to overwrite it")
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as error:
        raise InvalidInputError(f"cannot write {target}: {error.strerror}") from None
    print(f"wrote {target} (model {spec.id}, {spec.num_layers} layers, {spec.attention_summary})", file=sys.stderr)


@app.command()
def schema(
    kind: Annotated[str, typer.Argument(help="Spec kind: model or gpu.")],
) -> None:
    """Print the JSON Schema of model or GPU spec files, for editors that check and complete YAML."""
    from kvsize.schema import json_schema

    cleaned = kind.strip().lower()
    if cleaned not in ("model", "gpu"):
        raise InvalidInputError(f"invalid value for KIND: {kind!r}; expected model or gpu")
    print(json.dumps(json_schema(cleaned), indent=2))  # type: ignore[arg-type]
