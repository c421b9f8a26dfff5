"""Catalog commands: `models`, `gpus` and `show`.

Imported at the end of kvsize.cli, which registers the commands on its app.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Optional

import typer

from kvsize.cli import FormatOption, JsonOption, _stdout_console, app

SearchArgument = Annotated[Optional[str], typer.Argument(help="Case-insensitive substring of the id, name, aliases or Hugging Face id.")]


def _matches(search: str | None, *texts: str | None) -> bool:
    if not search:
        return True
    needle = search.strip().lower()
    return any(needle in text.lower() for text in texts if text)


def _distinct(values) -> Any:
    unique = list(dict.fromkeys(values))
    return unique[0] if len(unique) == 1 else unique


def model_summary(spec) -> dict[str, Any]:
    """Return the listing row of one model: key figures at its default KV dtype."""
    from kvsize.layers import FullAttention, LatentAttention
    from kvsize.precision import parse_precision
    from kvsize.sizing import bits_to_bytes, default_kv_dtype, kv_bits_per_token

    dtype = default_kv_dtype(spec)
    attention_layers = [layer for layer in spec.layers if isinstance(layer, FullAttention)]
    latent_layers = [layer for layer in spec.layers if isinstance(layer, LatentAttention)]
    return {
        "id": spec.id,
        "name": spec.name,
        "family": spec.family,
        "aliases": list(spec.aliases),
        "hf_id": spec.hf_id,
        "params_total": spec.params_total,
        "params_active": spec.params_active,
        "params_exact": spec.params_exact,
        "weight_dtype": spec.weight_dtype,
        "num_layers": spec.num_layers,
        "attention": spec.attention_summary,
        "num_kv_heads": _distinct(layer.num_kv_heads for layer in attention_layers) if attention_layers else None,
        "head_dim": _distinct(layer.k_head_dim for layer in attention_layers) if attention_layers else None,
        "kv_lora_rank": _distinct(layer.kv_lora_rank for layer in latent_layers) if latent_layers else None,
        "kv_cache_dtype": dtype,
        "kv_bytes_per_token": bits_to_bytes(kv_bits_per_token(spec, parse_precision(dtype))),
        "max_position_embeddings": spec.max_position_embeddings,
        "path": spec.path,
        "builtin": spec.path.startswith("configs/"),
    }


def gpu_summary(spec) -> dict[str, Any]:
    """Return the listing row of one GPU."""
    return {
        "id": spec.id,
        "name": spec.name,
        "vendor": spec.vendor,
        "aliases": list(spec.aliases),
        "memory_marketed_gb": spec.memory_marketed_gb,
        "memory_reported_bytes": spec.memory_reported_bytes,
        "memory_reported_estimated": spec.memory_reported_estimated,
        "memory_type": spec.memory_type,
        "memory_bandwidth_gb_per_s": spec.memory_bandwidth_gb_per_s,
        "bf16_dense_tflops": spec.bf16_dense_tflops,
        "path": spec.path,
        "builtin": spec.path.startswith("configs/"),
    }


def _joined(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return "/".join(str(item) for item in value)
    return str(value)


def _print_listing(kind: str, rows: list[dict[str, Any]], columns, chosen_format: str) -> None:
    from kvsize.formats import to_csv, to_json, to_markdown
    from kvsize.report import SCHEMA_VERSION

    if chosen_format == "json":
        sys.stdout.write(to_json({"schema_version": SCHEMA_VERSION, kind: rows}) + "\n")
    elif chosen_format == "csv":
        sys.stdout.write(to_csv(rows, columns))
    elif chosen_format == "markdown":
        sys.stdout.write(to_markdown(rows, columns))
    else:
        from kvsize.render import print_rows

        noun = {"models": "model", "gpus": "GPU"}[kind] + ("" if len(rows) == 1 else "s")
        print_rows(_stdout_console(), columns, rows, f"{len(rows)} {noun}")


@app.command()
def models(
    search: SearchArgument = None,
    family: Annotated[Optional[str], typer.Option("--family", help="Only this family, e.g. llama, qwen, deepseek.")] = None,
    attention: Annotated[Optional[str], typer.Option("--attention", help="Only models with this layer kind: full, sliding, chunked, mla, state, shared.")] = None,
    output_format: FormatOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the built-in models with layers, KV heads, head dim, attention kinds, KV bytes per token and max context."""
    from kvsize.catalog import catalog_with_user_specs
    from kvsize.cli import print_warnings
    from kvsize.errors import InvalidInputError
    from kvsize.formats import Column, resolve_format
    from kvsize.layers import LAYER_KINDS

    chosen_format = resolve_format(output_format, json_output)
    if attention is not None and attention.strip().lower() not in LAYER_KINDS:
        raise InvalidInputError(f"invalid value for --attention: {attention!r}; expected one of {', '.join(LAYER_KINDS)}")
    rows = []
    specs, warnings = catalog_with_user_specs("models")
    print_warnings(warnings)
    families = sorted({spec.family for spec in specs})
    if family is not None and family.strip().lower() not in families:
        raise InvalidInputError(f"invalid value for --family: {family!r}; the catalog has {', '.join(families)}")
    for spec in specs:
        if family is not None and spec.family != family.strip().lower():
            continue
        if attention is not None and attention.strip().lower() not in {layer.kind for layer in spec.layers}:
            continue
        if not _matches(search, spec.id, spec.name, spec.hf_id, *spec.aliases):
            continue
        rows.append(model_summary(spec))

    columns = [
        Column("id", "id"),
        Column("family", "family"),
        Column("num_layers", "layers"),
        Column("num_kv_heads", "KV heads", _joined),
        Column("head_dim", "head dim", _joined),
        Column("attention", "attention"),
        Column("kv_bytes_per_token", "KV/token", lambda value: f"{value:,} B"),
        Column("kv_cache_dtype", "dtype"),
        Column("max_position_embeddings", "max context"),
    ]
    _print_listing("models", rows, columns, chosen_format)


@app.command()
def gpus(
    search: SearchArgument = None,
    vendor: Annotated[Optional[str], typer.Option("--vendor", help="Only this vendor: nvidia, amd or google.")] = None,
    output_format: FormatOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the built-in GPUs with memory as marketed and as the driver reports it, and bandwidth."""
    from kvsize.catalog import catalog_with_user_specs
    from kvsize.cli import print_warnings
    from kvsize.formats import Column, resolve_format
    from kvsize.units import format_bytes

    chosen_format = resolve_format(output_format, json_output)
    specs, warnings = catalog_with_user_specs("gpus")
    print_warnings(warnings)
    vendors = sorted({spec.vendor for spec in specs})
    if vendor is not None and vendor.strip().lower() not in vendors:
        from kvsize.errors import InvalidInputError

        raise InvalidInputError(f"invalid value for --vendor: {vendor!r}; the catalog has {', '.join(vendors)}")
    rows = [
        gpu_summary(spec)
        for spec in specs
        if (vendor is None or spec.vendor == vendor.strip().lower()) and _matches(search, spec.id, spec.name, *spec.aliases)
    ]
    columns = [
        Column("id", "id"),
        Column("name", "name"),
        Column("memory_marketed_gb", "marketed", lambda value: f"{value:g} GB"),
        Column("memory_reported_bytes", "reported", format_bytes),
        Column("memory_reported_estimated", "estimated", lambda value: "estimate" if value else ""),
        Column("memory_bandwidth_gb_per_s", "bandwidth", lambda value: f"{value:,g} GB/s"),
    ]
    _print_listing("gpus", rows, columns, chosen_format)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="A model or GPU id, alias, or path to a spec file.")],
    output_format: FormatOption = None,
    json_output: JsonOption = False,
) -> None:
    """Print one model or GPU spec in full, with its sources and the file it came from."""
    from pathlib import Path

    from kvsize.catalog import load_gpu
    from kvsize.cli import _spec_kind
    from kvsize.formats import resolve_format

    chosen_format = resolve_format(output_format, json_output)

    if name.endswith((".yaml", ".yml")) and Path(name).is_file() and _spec_kind(Path(name)) == "gpus":
        spec = load_gpu(name)
        summary = gpu_summary(spec)
    else:
        spec, summary = _load_model_or_gpu(name)
    _show(spec, summary, chosen_format)


def _load_model_or_gpu(name: str):
    from kvsize.catalog import load_gpu, load_model
    from kvsize.errors import NotFoundError

    try:
        spec = load_model(name)
        summary = model_summary(spec)
    except NotFoundError as model_error:
        try:
            spec = load_gpu(name)
        except NotFoundError as gpu_error:
            # Keep a message that suggests close names or names a file problem; else point to both lists.
            for error in (model_error, gpu_error):
                if error.helpful:
                    raise error from None
            raise NotFoundError(f"no model or GPU named {name!r}; run 'kvsize models' or 'kvsize gpus' "
                                "to list the catalog") from None  # fmt: skip
        summary = gpu_summary(spec)
    return spec, summary


def _show(spec, summary, chosen_format: str) -> None:
    from kvsize.formats import to_json

    details = dict(summary)
    details["source"] = list(spec.source)
    details["notes"] = spec.notes
    if hasattr(spec, "layer_types"):
        details["layer_types"] = {
            type_name: {"kind": layer.kind, **vars(layer), "num_layers": spec.layer_type_names.count(type_name)}
            for type_name, layer in spec.layer_types.items()
        }
    if chosen_format == "json":
        sys.stdout.write(to_json(details) + "\n")
        return
    if chosen_format in ("csv", "markdown"):
        from kvsize.formats import Column, to_csv, to_markdown

        pairs = [{"field": key, "value": json.dumps(value) if isinstance(value, (dict, list)) else value}
                 for key, value in details.items()]  # fmt: skip
        columns = [Column("field", "field"), Column("value", "value", lambda value: "" if value is None else str(value))]
        sys.stdout.write(to_csv(pairs, columns) if chosen_format == "csv" else to_markdown(pairs, columns))
        return
    _print_details(details)


def _print_details(details: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    from kvsize.formats import format_cell

    table = Table(box=box.SIMPLE, show_header=False, title=details["name"], title_justify="left", pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in details.items():
        if key in ("source", "layer_types", "notes") or value in (None, []):
            continue
        if isinstance(value, list):
            shown = ", ".join(map(str, value))
        elif key == "path" and details.get("builtin"):
            shown = f"{value} (built-in, shipped inside the kvsize package)"
        elif isinstance(value, bool):
            shown = "yes" if value else "no"
        elif key in ("params_total", "params_active"):
            shown = f"{value:,}"
        elif isinstance(value, int) and "bytes" in key:
            shown = f"{format_cell(key, value)} ({value:,} bytes)"
        else:
            shown = format_cell(key, value)
        table.add_row(key, shown)
    for type_name, layer in details.get("layer_types", {}).items():
        fields = ", ".join(f"{key} {value}" for key, value in layer.items() if key not in ("kind", "num_layers"))
        table.add_row(f"layers: {type_name}", f"{layer['num_layers']} x {layer['kind']}" + (f" ({fields})" if fields else ""))
    for index, source in enumerate(details["source"], start=1):
        table.add_row(f"source {index}", source)
    if details.get("notes"):
        table.add_row("notes", details["notes"])
    from kvsize.render import print_table

    print_table(_stdout_console(), table)
