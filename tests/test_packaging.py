"""The wheel carries every spec under configs/ and kvsize reads them from the installed package."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("hatchling", reason="building the wheel offline needs hatchling (pip install '.[test]')")
    out_dir = tmp_path_factory.mktemp("wheel")
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out_dir), str(REPO)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    (path,) = out_dir.glob("kvsize-*.whl")
    return path


def test_wheel_contains_every_spec(wheel):
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    index = json.loads(archive.read("kvsize/configs/index.json"))
    for kind in ("models", "gpus"):
        folder = [Path(name) for name in names if name.startswith(f"kvsize/configs/{kind}/")]
        in_repo = {path.stem for path in (REPO / "configs" / kind).glob("*.yaml")}
        assert {path.stem for path in folder if path.suffix == ".yaml"} == in_repo
        assert {path.stem for path in folder if path.suffix == ".json"} == in_repo
        assert set(index[kind]) == in_repo


def test_json_twins_equal_yaml(wheel):
    """Each JSON twin holds exactly the data of its YAML file, aliases included in the index."""
    import yaml

    archive = zipfile.ZipFile(wheel)
    index = json.loads(archive.read("kvsize/configs/index.json"))
    for kind in ("models", "gpus"):
        for path in (REPO / "configs" / kind).glob("*.yaml"):
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            assert json.loads(archive.read(f"kvsize/configs/{kind}/{path.stem}.json")) == data
            names = list(data.get("aliases", []))
            if data.get("hf_id"):
                names.append(data["hf_id"])
            assert index[kind][path.stem] == names


def test_installed_wheel_loads_every_spec(wheel, tmp_path):
    """Unpack the wheel away from the checkout and load the catalog through importlib.resources."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = (
        "import sys\n"
        "import kvsize.catalog as c\n"
        "root = str(c.builtin_root())\n"
        "assert root.startswith(%r), root\n"
        "assert c.load_model('Meta-Llama-3-70B').id == 'llama3-70b'\n"
        "assert 'yaml' not in sys.modules, 'the installed catalog must not need PyYAML'\n"
        "print(len(list(c.iter_specs('models'))), len(list(c.iter_specs('gpus'))))\n"
    ) % str(site)
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    models, gpus = map(int, completed.stdout.split())
    assert models == len(list((REPO / "configs" / "models").glob("*.yaml")))
    assert gpus == len(list((REPO / "configs" / "gpus").glob("*.yaml")))
