"""One test per row of docs/bad-input.md: every bad input gets one error line and exit code 2."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from kvsize.catalog import load_gpu, load_model
from kvsize.render import estimate_table, print_rows
from kvsize.formats import Column
from kvsize.sizing import SizingRequest, estimate


def _assert_one_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert out == ""
    assert err.startswith("error: ")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


BASE = ["estimate", "--model", "llama3.1-8b"]

# (row of the options table, extra arguments, fragments the error must contain)
OPTION_CASES = [
    ("empty value", ["--ctx", ""], ["--ctx"]),
    ("blank GPU", ["--ctx", "8k", "--gpu", " "], ["GPU"]),
    ("empty format", ["--ctx", "8k", "--format", ""], ["--format"]),
    ("full-width digits", ["--ctx", "１２８k"], ["--ctx"]),
    ("inner space", ["--ctx", "128 k"], ["--ctx"]),
    ("unknown suffix", ["--ctx", "128kb"], ["--ctx"]),
    ("unknown unit", ["--ctx", "8k", "--reserve", "2XB"], ["--reserve"]),
    ("memory without unit", ["--ctx", "8k", "--reserve", "3"], ["--reserve", "no unit"]),
    ("zero batch", ["--ctx", "8k", "--batch", "0"], ["--batch"]),
    ("negative context", ["--ctx", "-1"], ["--ctx"]),
    ("zero tp", ["--ctx", "8k", "--tp", "0"], ["--tensor-parallel-size"]),
    ("huge context", ["--ctx", "1000000000000000"], ["--ctx", "2^40"]),
    ("huge batch", ["--ctx", "8k", "--batch", "1000000000000"], ["batch size"]),
    ("nan utilization", ["--ctx", "8k", "--gpu-memory-utilization", "nan"], ["--gpu-memory-utilization"]),
    ("inf utilization", ["--ctx", "8k", "--gpu-memory-utilization", "inf"], ["--gpu-memory-utilization"]),
    ("fractional batch", ["--ctx", "8k", "--batch", "2.5"], ["--batch"]),
    ("fractional tp", ["--ctx", "8k", "--tp", "1.5"], ["--tensor-parallel-size"]),
    ("fractional tokens", ["--ctx", "1.3k"], ["1331.2"]),
    ("utilization above one", ["--ctx", "8k", "--gpu-memory-utilization", "1.5"], ["--gpu-memory-utilization"]),
    ("keep ratio zero", ["--ctx", "8k", "--kv-keep-ratio", "0"], ["--kv-keep-ratio"]),
    ("unknown format", ["--ctx", "8k", "--format", "yaml"], ["--format", "csv"]),
    ("unknown dtype", ["--ctx", "8k", "--kv-cache-dtype", "fp7"], ["--kv-cache-dtype"]),
    ("unknown axis", ["--ctx", "8k", "--kv-cache-dtype", "int4", "--kv-group-size", "32", "--kv-quant-axis", "diagonal"],
     ["--kv-quant-axis"]),
    ("ratio and budget", ["--ctx", "8k", "--kv-keep-ratio", "0.2", "--kv-token-budget", "4k"], ["--kv-keep-ratio", "--kv-token-budget"]),
    ("json and csv", ["--ctx", "8k", "--json", "--format", "csv"], ["--json", "--format"]),
    ("group on bf16", ["--ctx", "8k", "--kv-cache-dtype", "bf16", "--kv-group-size", "64"], ["bf16"]),
    ("group without dtype", ["--ctx", "8k", "--kv-group-size", "64"], ["--kv-cache-dtype"]),
    ("recent without eviction", ["--ctx", "8k", "--kv-keep-recent", "32"], ["--kv-keep-recent"]),
    ("unknown model", ["--ctx", "8k", "--model", "llama3-71b"], ["llama3-70b", "kvsize models"]),
    ("unknown GPU", ["--ctx", "8k", "--gpu", "h1000"], ["h1000", "kvsize gpus"]),
    ("tp the heads forbid", ["--ctx", "8k", "--tp", "3"], ["valid sizes"]),
    ("option given twice", ["--ctx", "128k", "--batch", "2", "--ctx", "8k"], ["--ctx", "more than once"]),
    ("aliases given together", ["--ctx", "8k", "--tp", "2", "--tensor-parallel-size", "4"], ["--tp", "--tensor-parallel-size"]),
    ("full-width fraction", ["--ctx", "8k", "--gpu-memory-utilization", "０.９"], ["--gpu-memory-utilization"]),
    ("vanishing ratio", ["--ctx", "8k", "--kv-keep-ratio", "1e-999999999"], ["1e-12"]),
    ("memory beyond an exbibyte", ["--ctx", "8k", "--reserve", "99999999999TiB"], ["1 EiB"]),
]


@pytest.mark.parametrize(("row", "args", "fragments"), OPTION_CASES, ids=[case[0] for case in OPTION_CASES])
def test_bad_option(cli, row, args, fragments):
    base = ["estimate"] if "--model" in args else BASE
    code, out, err = cli(*base, *args)
    _assert_one_error(code, out, err, *fragments)


@pytest.mark.parametrize(
    ("command", "args", "fragment"),
    [
        ("compare", ["--model", "llama3.1-8b", "--ctx", "8k", "--sort", ""], "--sort"),
        ("compare", ["--model", "llama3.1-8b", "--ctx", "8k", "--columns", ""], "--columns"),
        ("compare", ["--model", "", "--ctx", "8k"], "--model"),
        ("plan", ["--model", "llama3.1-8b", "--ctx", "8k", "--gpu", ""], "--gpu"),
        ("check", ["--model", "llama3.1-8b", "--ctx", "8k", "--min-batch", "nan"], "--min-batch"),
        ("check", ["--model", "llama3.1-8b", "--ctx", "8k", "--max-kv-fraction", "-0.1"], "--max-kv-fraction"),
        ("curve", ["--model", "llama3.1-8b", "--max-ctx", "0"], "--max-ctx"),
        ("models", ["--attention", "foo"], "--attention"),
        ("show", ["nothing-like-this"], "nothing-like-this"),
    ],
)
def test_bad_input_other_commands(cli, command, args, fragment):
    code, out, err = cli(command, *args)
    _assert_one_error(code, out, err, fragment)


@pytest.mark.parametrize("name", ["Llama3-70B", "llama_3_70b", "LLAMA-3-70B", " llama3-70b "])
def test_case_and_punctuation_resolve(cli, name):
    code, out, _ = cli("estimate", "--model", name, "--gpu", "H100-SXM", "--ctx", "8k", "--json")
    assert code == 0
    assert json.loads(out)["model"] == "llama3-70b"


def test_plan_that_does_not_fit(cli):
    code, out, _ = cli("estimate", "--model", "llama3.1-405b", "--ctx", "8k", "--json")
    assert code == 0
    assert json.loads(out)["fits"] is False
    code, _, _ = cli("check", "--model", "llama3.1-405b", "--ctx", "8k")
    assert code == 1


# --- spec files ----------------------------------------------------------------------

VALID = Path(__file__).resolve().parent.parent / "configs" / "models" / "llama3-8b.yaml"


def _spec(tmp_path: Path, text: str, name: str = "bad.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _valid_text(spec_id: str = "bad") -> str:
    return VALID.read_text(encoding="utf-8").replace("id: llama3-8b", f"id: {spec_id}")


SPEC_CASES = [
    ("malformed YAML", "id: [unclosed\n", "invalid YAML"),
    ("top-level list", "- 1\n- 2\n", "expected a mapping"),
    ("top-level scalar", "just text\n", "expected a mapping"),
    ("empty file", "", "empty file"),
    ("duplicate key", None, "duplicate key"),
    ("unknown key", None, "did you mean"),
    ("wrong type", None, "expected a positive integer"),
    ("zero size", None, "positive integer"),
    ("window beyond context", None, "exceeds max_position_embeddings"),
    ("field of another kind", None, "unknown field"),
    ("KV heads not dividing heads", None, "do not divide"),
    ("id differs from file name", None, "must equal the file name"),
    ("python tag", "id: !!python/object/apply:os.system ['true']\n", "invalid YAML"),
]


def _mutated(row: str) -> str:
    text = _valid_text()
    replacements = {
        "duplicate key": ("num_layers: 32", "num_layers: 32\nnum_layers: 33"),
        "unknown key": ("num_layers: 32", "num_layer: 32"),
        "wrong type": ("num_layers: 32", "num_layers: thirty-two"),
        "zero size": ("head_dim: 128", "head_dim: 0"),
        "window beyond context": ("{kind: full, num_kv_heads: 8, head_dim: 128}",
                                  "{kind: sliding, num_kv_heads: 8, head_dim: 128, sliding_window: 99999999}"),
        "field of another kind": ("head_dim: 128}", "head_dim: 128, kv_lora_rank: 512}"),
        "KV heads not dividing heads": ("num_kv_heads: 8", "num_kv_heads: 5"),
        "id differs from file name": ("id: bad", "id: other"),
    }
    old, new = replacements[row]
    assert old in text, row
    return text.replace(old, new)


@pytest.mark.parametrize(("row", "text", "fragment"), SPEC_CASES, ids=[case[0] for case in SPEC_CASES])
def test_bad_spec_file(cli, tmp_path, row, text, fragment):
    path = _spec(tmp_path, _mutated(row) if text is None else text)
    code, out, err = cli("estimate", "--model", path, "--ctx", "8k")
    _assert_one_error(code, out, err, fragment, "bad.yaml")


def test_spec_not_utf8(cli, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"id: bad\nname: \xff\n")
    code, out, err = cli("estimate", "--model", str(path), "--ctx", "8k")
    _assert_one_error(code, out, err, "UTF-8")


def test_spec_too_large(cli, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"# " + b"x" * (50 * 1024 * 1024) + b"\n")
    code, out, err = cli("estimate", "--model", str(path), "--ctx", "8k")
    _assert_one_error(code, out, err, "limit for a spec file")


def test_same_id_twice_in_one_folder(cli, tmp_path):
    folder = tmp_path / "specs"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "twin.yaml").write_text(_valid_text("twin"), encoding="utf-8")
    (folder / "twin.yaml").write_text(_valid_text("twin"), encoding="utf-8")
    code, out, err = cli("--config-dir", str(folder), "estimate", "--model", "twin", "--ctx", "8k")
    _assert_one_error(code, out, err, "two user spec files", "twin.yaml")


def test_broken_user_spec_does_not_stop_others(cli, tmp_path):
    folder = tmp_path / "specs"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "broken.yaml").write_text("id: [unclosed\n", encoding="utf-8")
    (folder / "models" / "mine.yaml").write_text(_valid_text("mine"), encoding="utf-8")
    code, out, _ = cli("--config-dir", str(folder), "estimate", "--model", "mine", "--ctx", "8k", "--json")
    assert code == 0
    assert json.loads(out)["model"] == "mine"
    code, out, _ = cli("--config-dir", str(folder), "estimate", "--model", "llama3.1-8b", "--ctx", "8k", "--json")
    assert code == 0
    code, out, err = cli("--config-dir", str(folder), "estimate", "--model", "broken", "--ctx", "8k")
    _assert_one_error(code, out, err, "broken.yaml")


# --- output ----------------------------------------------------------------------------


def _render(width: int) -> str:
    result = estimate(load_model("llama3.1-70b"), load_gpu("h100"), SizingRequest(context_tokens=131072, tensor_parallel_size=4))
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=True).print(estimate_table(result))
    return buffer.getvalue()


@pytest.mark.parametrize("width", [40, 80, 300])
def test_estimate_table_fits_width(width):
    text = _render(width)
    assert max(len(line) for line in text.splitlines()) <= width
    flat = " ".join(text.split())
    # Every figure survives intact at any width: wrapped at spaces, never cut.
    for figure in ("(327,680", "482,719 tokens", "36.83 GiB"):
        assert figure in flat


def test_narrow_terminal_prints_blocks():
    buffer = io.StringIO()
    console = Console(file=buffer, width=40, color_system=None, force_terminal=True)
    columns = [Column(key, key) for key in ("model", "gpu", "context_tokens", "kv_cache_bytes_per_gpu", "fits", "max_batch_size")]
    rows = [{"model": "llama3.1-70b", "gpu": "h100-sxm", "context_tokens": 131072,
             "kv_cache_bytes_per_gpu": 10 * 2**30, "fits": True, "max_batch_size": 3}] * 3  # fmt: skip
    print_rows(console, columns, rows, "three rows")
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 40
    assert text.count("llama3.1-70b") == 3
    assert "10.00 GiB" in text


def _run(args: list[str], **environment: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **environment}
    return subprocess.run([sys.executable, "-m", "kvsize", *args], capture_output=True, text=True, env=env, check=False)


def test_pipe_output_is_plain_and_unwrapped():
    completed = _run(["compare", "-m", "llama3.1-70b,deepseek-v3", "--gpu", "h100,h200", "--ctx", "32k,128k"],
                     NO_COLOR="1", TERM="dumb", COLUMNS="80")  # fmt: skip
    assert completed.returncode == 0
    assert "\x1b[" not in completed.stdout
    lines = completed.stdout.splitlines()
    assert all(line == line.rstrip() for line in lines)
    header = next(line for line in lines if "max batch" in line)
    assert len(header) > 80  # not wrapped at the terminal default


def test_closed_stdout_exits_quietly():
    # About 340 KB of JSON, more than a pipe buffers, so the writer hits the closed pipe.
    gpus = ",".join(["h100", "h200", "b200", "l4", "l40s", "a100-80gb", "a10g", "t4", "mi300x"])
    args = ["compare", "-m", "llama3.1-8b,qwen3-8b,mistral-7b", "--gpu", gpus, "--ctx", "1k,2k,4k,8k,16k,32k", "--json"]
    process = subprocess.Popen([sys.executable, "-m", "kvsize", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.readline()
    process.stdout.close()
    _, err = process.communicate()
    assert process.returncode == 0
    assert b"Traceback" not in err


def test_list_as_mapping_key(cli, tmp_path):
    path = _spec(tmp_path, _valid_text() + "? [a, b]\n: 2\n")
    code, out, err = cli("estimate", "--model", path, "--ctx", "8k")
    _assert_one_error(code, out, err, "mapping key must be a plain name")


def test_billion_layers_rejected_without_allocating(cli, tmp_path):
    path = _spec(tmp_path, _valid_text().replace("num_layers: 32", "num_layers: 1000000000000000"))
    code, out, err = cli("estimate", "--model", path, "--ctx", "8k")
    _assert_one_error(code, out, err, "num_layers", "100,000")


def test_nul_byte_is_one_line(cli, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"id: bad\nname: \x00\n")
    code, out, err = cli("estimate", "--model", str(path), "--ctx", "8k")
    _assert_one_error(code, out, err, "invalid YAML")


def test_folder_and_device_are_not_specs(cli, tmp_path):
    folder = tmp_path / "specs.yaml"
    folder.mkdir()
    code, out, err = cli("validate", str(folder / ".." / "specs.yaml" / ".." / "specs.yaml"))
    assert code == 2
    code, out, err = cli("estimate", "--model", "/dev/null", "--ctx", "8k")
    assert code == 2
    assert "Traceback" not in err


def test_config_json_duplicate_key_and_deep_nesting(cli, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"model_type": "llama", "num_hidden_layers": 32, "num_hidden_layers": 64}', encoding="utf-8")
    code, out, err = cli("estimate", "--model", str(config), "--ctx", "8k")
    _assert_one_error(code, out, err, "duplicate key 'num_hidden_layers'")
    config.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    code, out, err = cli("estimate", "--model", str(config), "--ctx", "8k")
    _assert_one_error(code, out, err, "nested too deeply")


def test_compare_combination_cap(cli):
    contexts = ",".join(str(1024 + step) for step in range(700))
    batches = ",".join(str(step) for step in range(1, 301))
    code, out, err = cli("compare", "--model", "llama3.1-8b", "--ctx", contexts, "--batch", batches)
    _assert_one_error(code, out, err, "210,000 combinations")


def test_unknown_family_and_vendor(cli):
    code, out, err = cli("models", "--family", "bogus")
    _assert_one_error(code, out, err, "--family", "llama")
    code, out, err = cli("gpus", "--vendor", "intel")
    _assert_one_error(code, out, err, "--vendor", "nvidia")


def test_show_reads_gpu_file(cli):
    path = Path(__file__).resolve().parent.parent / "configs" / "gpus" / "h100-sxm.yaml"
    code, out, _ = cli("show", str(path), "--json")
    assert code == 0
    assert json.loads(out)["id"] == "h100-sxm"


@pytest.mark.parametrize("variable", [("NO_COLOR", "1"), ("TERM", "dumb")])
def test_plain_text_on_a_terminal(cli, monkeypatch, variable):
    """NO_COLOR and TERM=dumb turn off bold and italics too, even where Rich detects a terminal."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv(*variable)
    code, out, _ = cli("estimate", "--model", "llama3.1-8b", "--ctx", "8k")
    assert code == 0
    assert "KV per token" in out
    assert "\x1b[" not in out


def test_symlink_loop_and_device(cli, tmp_path):
    first, second = tmp_path / "loop1.yaml", tmp_path / "loop2.yaml"
    first.symlink_to(second)
    second.symlink_to(first)
    for args in (["validate", str(first)], ["estimate", "--model", str(first), "--ctx", "8k"]):
        code, out, err = cli(*args)
        assert code == 2
        assert "Traceback" not in err
        assert "loop1.yaml" in err
    code, _, err = cli("validate", "/dev/null")
    assert code == 2
    assert "not a regular file" in err


@pytest.mark.parametrize("args", [["estimate", "--model", "", "--ctx", "8k"], ["log", ""]])
def test_empty_names(cli, args):
    code, out, err = cli(*args)
    _assert_one_error(code, out, err, "empty")


def test_compare_with_no_valid_combination(cli):
    code, out, err = cli("compare", "--model", "llama3.1-8b", "--ctx", "8k", "--tp", "3,5")
    _assert_one_error(code, out, err, "no combination can be sized", "TP 3", "TP 5")


def test_plan_lists_each_gpu_once(cli):
    code, out, _ = cli("plan", "--model", "llama3.1-8b", "--ctx", "8k", "--gpu", "h100,h100-sxm,l4", "--json")
    assert code == 0
    assert [option["gpu"] for option in json.loads(out)["options"]] == ["l4", "h100-sxm"]
