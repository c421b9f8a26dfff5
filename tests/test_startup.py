"""Start-up regressions that creep back: heavy imports on paths that do not need them.

Timing targets are checked by benchmarks/startup.py, not here; these tests
check which modules a path imports, which is deterministic.
"""

import json
import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(completed.stdout.strip().splitlines()[-1]))


def test_core_imports_neither_rich_nor_typer():
    modules = _modules_after(
        "from kvsize.catalog import load_gpu, load_model\n"
        "from kvsize.sizing import SizingRequest, estimate\n"
        "estimate(load_model('llama3-70b'), load_gpu('h100'), SizingRequest(context_tokens=131072))\n"
    )
    assert not {name for name in modules if name.split(".")[0] in ("rich", "typer", "click", "pydantic")}


def test_json_path_does_not_import_rich():
    modules = _modules_after(
        "import sys\n"
        "from kvsize.cli import run\n"
        "code = run(['estimate', '--model', 'llama3-70b', '--ctx', '128k', '--json'])\n"
        "assert code == 0\n"
    )
    assert "kvsize.cli" in modules
    assert not {name for name in modules if name.split(".")[0] == "rich"}


def test_check_text_path_does_not_import_rich():
    modules = _modules_after(
        "from kvsize.cli import run\n"
        "run(['check', '--model', 'llama3.1-70b', '--ctx', '128k', '--tp', '4'])\n"
    )
    assert not {name for name in modules if name.split(".")[0] == "rich"}


def test_loading_by_id_reads_one_spec(monkeypatch):
    """Looking a model up by id opens its own file and no other spec."""
    import kvsize.catalog as catalog

    opened = []
    real_parse = catalog._parse

    def counting_parse(kind, text, path, expected_id, data=None):
        opened.append(path)
        return real_parse(kind, text, path, expected_id, data)

    monkeypatch.setattr(catalog, "_parse", counting_parse)
    catalog.load_model("llama3-70b")
    assert opened == ["configs/models/llama3-70b.yaml"]
