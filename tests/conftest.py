"""Shared fixtures: building specs from YAML text and running the CLI in-process."""

from __future__ import annotations

import textwrap

import pytest

from kvsize.cli import run
from kvsize.specs import ModelSpec, parse_model_spec, parse_yaml_mapping

BASE_MODEL_FIELDS = """\
id: {id}
name: Test model
family: test
params_total: 1000000000
weight_dtype: bf16
max_position_embeddings: 1048576
hidden_size: 4096
num_attention_heads: 32
source: ["written for a test"]
"""


def make_model(body: str, model_id: str = "test-model", **overrides: object) -> ModelSpec:
    """Build a ModelSpec from the base fields plus `body` (num_layers and layer fields)."""
    text = BASE_MODEL_FIELDS.format(id=model_id) + textwrap.dedent(body)
    for key, value in overrides.items():
        text = "\n".join(line for line in text.splitlines() if not line.startswith(f"{key}:"))
        text += f"\n{key}: {value}\n"
    return parse_model_spec(parse_yaml_mapping(text, f"{model_id}.yaml"), f"{model_id}.yaml")


@pytest.fixture(autouse=True)
def no_user_spec_folders(monkeypatch, tmp_path_factory):
    """Keep the developer's own spec folders (KVSIZE_CONFIG_PATH, ~/.config/kvsize) out of every test."""
    from kvsize import user_specs

    empty = tmp_path_factory.mktemp("no-user-config")
    monkeypatch.delenv(user_specs.CONFIG_PATH_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(empty))
    monkeypatch.setenv("APPDATA", str(empty))
    monkeypatch.setattr(user_specs, "_cli_config_dirs", ())


@pytest.fixture
def cli(capsys):
    """Run kvsize with arguments; return (exit code, stdout, stderr)."""

    def invoke(*args: str) -> tuple[int, str, str]:
        code = run(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke
