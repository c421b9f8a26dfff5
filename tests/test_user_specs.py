"""User spec folders: --config-dir, KVSIZE_CONFIG_PATH and the user config folder, and overriding built-ins."""

import json
import os

import pytest

from kvsize import user_specs
from kvsize.catalog import builtin_root, load_gpu, load_model
from kvsize.errors import InvalidInputError, NotFoundError

MIG_SLICE = """\
id: h100-mig-3g
name: NVIDIA H100 SXM5 MIG 3g.40gb slice
vendor: nvidia
aliases: [h100-3g.40gb]
memory_marketed_gb: 40
memory_reported_bytes: 42144366592
memory_bandwidth_gb_per_s: 1675
source: ["written for a test"]
"""


def builtin_text(kind: str, spec_id: str) -> str:
    return builtin_root().joinpath(kind, f"{spec_id}.yaml").read_text(encoding="utf-8")


def write_model(folder, spec_id: str, num_layers: int = 32, top_level: bool = False):
    """Write a copy of llama3-8b with another id and layer count into `folder/models` (or the folder itself)."""
    text = builtin_text("models", "llama3-8b").replace("id: llama3-8b", f"id: {spec_id}")
    text = text.replace("num_layers: 32", f"num_layers: {num_layers}")
    target = folder if top_level else folder / "models"
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{spec_id}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_dir_option(tmp_path, cli):
    path = write_model(tmp_path, "private-8b", num_layers=16)
    code, out, err = cli("--config-dir", str(tmp_path), "estimate", "--model", "private-8b", "--ctx", "8k", "--json")
    assert code == 0, err
    data = json.loads(out)
    # 16 layers x 8 KV heads x 256 x 2 bytes = 65,536.
    assert data["kv_bytes_per_token"] == 65536
    code, out, _ = cli("--config-dir", str(tmp_path), "show", "private-8b", "--json")
    assert json.loads(out)["path"] == str(path)


def test_config_dir_must_exist(tmp_path, cli):
    code, _, err = cli("--config-dir", str(tmp_path / "nope"), "models")
    assert code == 2
    assert "invalid value for --config-dir" in err


def test_user_spec_overrides_builtin(tmp_path, monkeypatch):
    path = write_model(tmp_path, "llama3-70b", num_layers=40)
    monkeypatch.setenv(user_specs.CONFIG_PATH_VARIABLE, str(tmp_path))
    spec = load_model("llama3-70b")
    assert spec.num_layers == 40
    assert spec.path == str(path)
    # A built-in alias of the overridden id leads to the user's file too.
    assert load_model("Meta-Llama-3-70B").path == str(path)


def test_builtin_path_is_the_catalog_file():
    assert load_model("llama3-70b").path == "configs/models/llama3-70b.yaml"
    assert load_gpu("h100").path == "configs/gpus/h100-sxm.yaml"


def test_search_order(tmp_path, monkeypatch):
    first, second, home = tmp_path / "first", tmp_path / "second", tmp_path / "xdg"
    write_model(first, "mine", num_layers=10)
    write_model(second, "mine", num_layers=20)
    write_model(home / "kvsize", "mine", num_layers=30)
    write_model(home / "kvsize", "only-home", num_layers=31)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    assert load_model("mine").num_layers == 30
    monkeypatch.setenv(user_specs.CONFIG_PATH_VARIABLE, os.pathsep.join([str(second), str(first)]))
    assert load_model("mine").num_layers == 20
    user_specs.set_cli_config_dirs([first])
    assert load_model("mine").num_layers == 10
    assert load_model("only-home").num_layers == 31


def test_top_level_files_by_content(tmp_path, monkeypatch):
    write_model(tmp_path, "flat-model", top_level=True)
    (tmp_path / "h100-mig-3g.yaml").write_text(MIG_SLICE, encoding="utf-8")
    monkeypatch.setenv(user_specs.CONFIG_PATH_VARIABLE, str(tmp_path))
    assert load_model("flat-model").id == "flat-model"
    gpu = load_gpu("h100-3g.40gb")
    assert gpu.id == "h100-mig-3g"
    assert gpu.path == str(tmp_path / "h100-mig-3g.yaml")
    with pytest.raises(NotFoundError):
        load_model("h100-mig-3g")


def test_mig_slice_in_estimate(tmp_path, cli):
    (tmp_path / "gpus").mkdir()
    (tmp_path / "gpus" / "h100-mig-3g.yaml").write_text(MIG_SLICE, encoding="utf-8")
    code, out, err = cli("--config-dir", str(tmp_path), "estimate", "-m", "llama3-8b", "--ctx", "8k", "-g",
                         "h100-mig-3g", "--json")  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["gpu"] == "h100-mig-3g"
    # floor(42,144,366,592 x 0.9) = 37,929,929,932 usable bytes.
    assert data["usable_memory_bytes_per_gpu"] == 37929929932


def test_invalid_user_spec_reports_its_file(tmp_path, cli):
    path = write_model(tmp_path, "broken")
    path.write_text(path.read_text().replace("num_layers: 32", "num_layers: -1"), encoding="utf-8")
    code, _, err = cli("--config-dir", str(tmp_path), "estimate", "-m", "broken", "--ctx", "8k")
    assert code == 2
    assert str(path) in err
    assert "num_layers" in err


def test_ambiguous_user_alias(tmp_path, monkeypatch):
    for spec_id in ("one", "two"):
        path = write_model(tmp_path, spec_id)
        path.write_text(path.read_text().replace("aliases: [", "aliases: [shared-name, "), encoding="utf-8")
    monkeypatch.setenv(user_specs.CONFIG_PATH_VARIABLE, str(tmp_path))
    with pytest.raises(NotFoundError, match="ambiguous"):
        load_model("shared-name")


def test_set_cli_config_dirs_rejects_file(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InvalidInputError):
        user_specs.set_cli_config_dirs([tmp_path / "file.txt"])


def test_user_config_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    if os.name != "nt":
        assert user_specs.user_config_dir() == tmp_path / "kvsize"


def test_listings_include_user_specs(cli, tmp_path):
    """`kvsize models`, `kvsize gpus` and `kvsize plan` see user specs; a broken one is skipped with a warning."""
    import json

    folder = tmp_path / "specs"
    (folder / "gpus").mkdir(parents=True)
    (folder / "models").mkdir(parents=True)
    (folder / "gpus" / "mig-3g.yaml").write_text(
        "id: mig-3g\nname: H100 MIG 3g.40gb\nvendor: nvidia\nmemory_marketed_gb: 40\n"
        "memory_reported_bytes: 42949672960\nmemory_bandwidth_gb_per_s: 1675\nsource: [test]\n",
        encoding="utf-8",
    )
    (folder / "models" / "broken.yaml").write_text("id: [unclosed\n", encoding="utf-8")

    code, out, err = cli("--config-dir", str(folder), "gpus", "--json")
    assert code == 0
    assert "mig-3g" in {entry["id"] for entry in json.loads(out)["gpus"]}

    code, out, err = cli("--config-dir", str(folder), "models", "--json")
    assert code == 0
    assert "llama3-70b" in {entry["id"] for entry in json.loads(out)["models"]}
    assert "skipped user spec" in err
    assert "broken.yaml" in err

    code, out, _ = cli("--config-dir", str(folder), "plan", "--model", "llama3.1-8b", "--ctx", "8k", "--json")
    # 16.06 GB of bf16 weights fit one 40 GiB slice: usable 38.65 GB leaves 20.45 GB of KV budget.
    options = {option["gpu"]: option for option in json.loads(out)["options"]}
    assert options["mig-3g"]["num_gpus"] == 1
