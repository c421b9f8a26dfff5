"""The JSON Schema of spec files, and `kvsize validate` reporting every problem with its line."""

import json

import pytest

from kvsize import specs
from kvsize.catalog import builtin_root
from kvsize.schema import GPU_FIELDS, LAYER_FIELDS, MODEL_FIELDS, json_schema
from kvsize.spec_check import check_spec_file


def test_tables_match_parser_fields():
    """The schema lists exactly the fields the spec parser accepts, so neither can drift."""
    assert set(MODEL_FIELDS) == specs._MODEL_FIELDS
    assert set(GPU_FIELDS) == specs._GPU_FIELDS
    assert set(LAYER_FIELDS) == set(specs._LAYER_FIELDS)
    for kind, fields in LAYER_FIELDS.items():
        assert {"kind", *fields} == specs._LAYER_FIELDS[kind], kind


@pytest.mark.parametrize("kind", ["models", "gpus"])
def test_every_builtin_spec_passes_checks(kind):
    folder = builtin_root().joinpath(kind)
    checked = 0
    for entry in folder.iterdir():
        if entry.name.endswith(".yaml"):
            problems, spec = check_spec_file(kind, entry)
            assert problems == [], entry.name
            assert spec is not None
            checked += 1
    assert checked > 20


def test_schema_command_prints_json(cli):
    code, out, err = cli("schema", "model")
    assert code == 0
    assert err == ""
    schema = json.loads(out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert "num_layers" in schema["required"]
    assert len(schema["$defs"]["layer"]["oneOf"]) == len(LAYER_FIELDS)
    code, out, _ = cli("schema", "gpu")
    assert json.loads(out)["properties"]["memory_reported_bytes"]["minimum"] == 1


def test_schema_command_rejects_kind(cli):
    code, _, err = cli("schema", "tpu")
    assert code == 2
    assert "expected model or gpu" in err


def test_optional_fields_accept_null():
    schema = json_schema("model")
    assert schema["properties"]["params_active"]["type"] == ["integer", "null"]
    assert schema["properties"]["params_total"]["type"] == "integer"


@pytest.mark.parametrize("kind", ["models", "gpus"])
def test_builtin_specs_valid_against_schema(kind):
    """When jsonschema is installed, every shipped spec validates against the generated schema."""
    jsonschema = pytest.importorskip("jsonschema")
    import yaml

    validator = jsonschema.Draft202012Validator(json_schema("model" if kind == "models" else "gpu"))
    for entry in builtin_root().joinpath(kind).iterdir():
        if entry.name.endswith(".yaml"):
            document = yaml.safe_load(entry.read_text(encoding="utf-8"))
            assert list(validator.iter_errors(document)) == [], entry.name


BROKEN_MODEL = """\
id: broken
name: Broken model
family: test
params_total: -5
weight_dtype: bf17
max_position_embeddings: 8192
hidden_size: 4096
num_attention_heads: 32
num_layers: 2
layer_types:
  attention: {kind: full, num_kv_heads: 8}
  window: {kind: sliding, num_kv_head: 8, head_dim: 128}
layer_pattern: [attention, missing]
sourc: ["a typo"]
"""


def test_validate_reports_every_problem(tmp_path, cli):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN_MODEL, encoding="utf-8")
    code, out, err = cli("validate", str(path))
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert all(line.startswith(f"error: {path}:") for line in lines)
    expected = [
        ":4: field 'params_total': expected a positive integer, got -5",
        ":5: field 'weight_dtype': unknown weight dtype 'bf17'",
        ":14: unknown field 'sourc'; did you mean 'source'?",
        ":1: missing required field 'source'",
        ":11: missing required field 'layer_types.attention.head_dim'",
        ":12: unknown field 'layer_types.window.num_kv_head'; did you mean 'layer_types.window.num_kv_heads'?",
        ":12: missing required field 'layer_types.window.sliding_window'",
        ":13: field 'layer_pattern': unknown layer type 'missing'",
    ]
    for fragment in expected:
        assert any(fragment in line for line in lines), fragment


def test_validate_runs_parser_rules(tmp_path, cli):
    """Problems spanning fields (the id must match the file name) come from the parser once fields pass."""
    text = builtin_root().joinpath("models", "llama3-8b.yaml").read_text(encoding="utf-8")
    path = tmp_path / "other-name.yaml"
    path.write_text(text, encoding="utf-8")
    code, _, err = cli("validate", str(path))
    assert code == 2
    assert "must equal the file name" in err


def test_validate_folder(tmp_path, cli):
    models = tmp_path / "models"
    gpus = tmp_path / "gpus"
    models.mkdir()
    gpus.mkdir()
    (models / "llama3-8b.yaml").write_text(builtin_root().joinpath("models", "llama3-8b.yaml").read_text())
    (gpus / "h100-sxm.yaml").write_text(builtin_root().joinpath("gpus", "h100-sxm.yaml").read_text())
    code, out, err = cli("validate", str(tmp_path))
    assert code == 0, err
    assert out.splitlines() == [f"ok: {gpus / 'h100-sxm.yaml'} (gpu h100-sxm)",
                                f"ok: {models / 'llama3-8b.yaml'} (model llama3-8b)"]  # fmt: skip


def test_validate_gpu_problems(tmp_path, cli):
    gpus = tmp_path / "gpus"
    gpus.mkdir()
    (gpus / "bad-gpu.yaml").write_text("id: bad-gpu\nname: x\nvendor: nvidia\nmemory_marketed_gb: 0\n"
                                       "memory_reported_bytes: 1.5\nsource: [x]\n")  # fmt: skip
    code, _, err = cli("validate", str(gpus / "bad-gpu.yaml"))
    assert code == 2
    assert ":4: field 'memory_marketed_gb': expected a positive finite number, got 0" in err
    assert ":5: field 'memory_reported_bytes': expected a positive integer, got 1.5" in err
    assert "missing required field 'memory_bandwidth_gb_per_s'" in err


def test_validate_yaml_syntax_error(tmp_path, cli):
    path = tmp_path / "bad.yaml"
    path.write_text("id: [unclosed\n", encoding="utf-8")
    code, _, err = cli("validate", str(path))
    assert code == 2
    assert err.startswith(f"error: {path}:")
    assert "invalid YAML" in err
