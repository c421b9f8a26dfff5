"""The command line: output of `estimate`, JSON keys, and every error path with its exit code."""

import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(autouse=True)
def fixed_width(monkeypatch):
    """Render tables at 100 columns without colour, whatever the terminal."""
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("FORCE_COLOR", raising=False)


def test_estimate_golden_table(cli):
    code, out, err = cli("estimate", "--model", "llama3.1-70b", "--ctx", "128k", "--tp", "4")
    assert code == 0
    assert err == ""
    expected = (GOLDEN / "estimate_llama3.1-70b_128k_tp4.txt").read_text(encoding="utf-8")
    assert [line.rstrip() for line in out.splitlines()] == [line.rstrip() for line in expected.splitlines()]


def test_estimate_json_llama3_70b(cli):
    code, out, err = cli("estimate", "--model", "llama3-70b", "--ctx", "128k", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["schema_version"] == 1
    assert data["model"] == "llama3-70b"
    assert data["gpu"] == "h100-sxm"
    assert data["context_tokens"] == 131072
    assert data["batch_size"] == 1
    assert data["kv_cache_dtype"] == "bf16"
    assert data["tensor_parallel_size"] == 1
    assert data["kv_bytes_per_token"] == 327680
    assert data["kv_cache_bytes"] == 42949672960
    assert data["kv_cache_bytes_per_gpu"] == 42949672960
    # 70,553,706,496 params x 2 bytes.
    assert data["weights_bytes"] == 141107412992
    assert data["weights_bytes_per_gpu"] == 141107412992
    # 76,968,728,985 usable - 141,107,412,992 weights - 2 GiB reserve.
    assert data["kv_budget_bytes_per_gpu"] == 76968728985 - 141107412992 - 2147483648
    assert data["fits"] is False
    assert data["max_context_tokens"] == 0
    assert data["max_batch_size"] == 0
    # Llama 3 (not 3.1) was trained on 8,192-token sequences.
    assert "max_position_embeddings" in err


def test_estimate_json_fits_at_tp2(cli):
    # 141,107,412,992 / 2 = 70,553,706,496 weights per GPU; budget = 76,968,728,985 - that - 2 GiB
    # = 4,267,538,841 bytes. 8k context needs 8192 x 163,840 = 1,342,177,280 per GPU: fits, 3 sequences.
    code, out, _ = cli("estimate", "-m", "llama3-70b", "--ctx", "8k", "--tp", "2", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["kv_bytes_per_token_per_gpu"] == 163840
    assert data["kv_budget_bytes_per_gpu"] == 4267538841
    assert data["fits"] is True
    assert data["max_batch_size"] == 3
    assert data["max_context_tokens"] == 4267538841 // 163840


def test_fp8_cache_halves_kv(cli):
    _, out, _ = cli("estimate", "-m", "llama3.1-8b", "--ctx", "1k", "--kv-cache-dtype", "fp8", "--json")
    assert json.loads(out)["kv_bytes_per_token"] == 65536


def test_kv_dtype_alias_and_group(cli):
    # int4 with group 32, scale and zero point: 5 bits per element -> 131,072 x 5 / 16 = 40,960.
    _, out, _ = cli("estimate", "-m", "llama3.1-8b", "--ctx", "1k", "--kv-dtype", "int4",
                    "--kv-group-size", "32", "--kv-zero-point", "--json")  # fmt: skip
    assert json.loads(out)["kv_bytes_per_token"] == 40960


def test_sliding_window_model_unbounded(cli):
    # Mistral 7B v0.1 slides on every layer, so its cache stops growing at 4096 tokens.
    _, out, _ = cli("estimate", "-m", "mistral-7b", "--ctx", "32k", "--json")
    data = json.loads(out)
    assert data["kv_cache_bytes"] == 536870912
    assert data["max_context_tokens"] is None


def test_weights_too_large_is_an_answer(cli):
    # 70.55B bf16 parameters need 131.4 GiB: no single H100. At TP 4 the KV for 128k (10 GiB per GPU)
    # fits beside 32.9 GiB of weights; fp8 or int4 weights alone leave too little room for 40 GiB of KV.
    code, out, _ = cli("estimate", "-m", "llama3.1-70b", "--ctx", "128k")
    assert code == 0
    assert "no: weights and reserve exceed usable memory" in out
    assert "this fits: --tp 4" in out


def test_nothing_fits_points_to_plan(cli):
    # 405B bf16 weights are 25.3 GB per GPU even at TP 32, above an RTX 4090's 24 GiB.
    code, out, _ = cli("estimate", "-m", "llama3.1-405b", "--gpu", "rtx-4090", "--ctx", "8k")
    assert code == 0
    assert "kvsize plan" in out


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "kvsize", "estimate", "-m", "llama3.1-8b", "--ctx", "8k", "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["kv_cache_bytes"] == 8192 * 131072


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--ctx", "0"], "--ctx"),
        (["--ctx", "-5"], "--ctx"),
        (["--ctx", "abc"], "--ctx"),
        (["--ctx", "128kb"], "--ctx"),
        (["--ctx", "1.3k"], "whole number"),
        (["--ctx", "８k"], "--ctx"),
        (["--ctx", "8k", "--batch", "0"], "--batch"),
        (["--ctx", "8k", "--batch", "2.5"], "--batch"),
        (["--ctx", "8k", "--gpu-memory-utilization", "0"], "--gpu-memory-utilization"),
        (["--ctx", "8k", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
        (["--ctx", "8k", "--gpu-memory-utilization", "nan"], "--gpu-memory-utilization"),
        (["--ctx", "8k", "--gpu-memory-utilization", "inf"], "--gpu-memory-utilization"),
        (["--ctx", "8k", "--gpu-memory-utilization", "abc"], "--gpu-memory-utilization"),
        (["--ctx", "8k", "--kv-cache-dtype", "fp7"], "--kv-cache-dtype"),
        (["--ctx", "8k", "--weights-dtype", "int3"], "--weights-dtype"),
        (["--ctx", "8k", "--tp", "3"], "tensor-parallel size 3"),
        (["--ctx", "8k", "--tp", "3"], "valid sizes up to 64: 1, 2, 4, 8, 16, 32"),
        (["--ctx", "1099511627777"], "more than 1,099,511,627,776 tokens"),
        (["--ctx", "8k", "--batch", "1000000001"], "invalid batch size"),
        (["--ctx", "8k", "--reserve", "3"], "has no unit"),
        (["--ctx", "8k", "--kv-cache-dtype", "bf16", "--kv-group-size", "64"], "not quantized"),
        (["--ctx", "8k", "--tp", "0"], "--tensor-parallel-size"),
        (["--ctx", "8k", "--reserve", "lots"], "--reserve"),
        (["--ctx", "8k", "--gpu", "h1000"], "unknown GPU 'h1000'"),
        (["--ctx", "8k", "--kv-group-size", "32"], "--kv-cache-dtype"),
        (["--ctx", "8k", "--bogus"], "--bogus"),
        ([], "--ctx"),
    ],
)
def test_estimate_invalid_input(cli, args, fragment):
    code, out, err = cli("estimate", "--model", "llama3.1-8b", *args)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ")
    assert err.count("\n") == 1, err
    assert fragment in err
    assert "Traceback" not in err


def test_unknown_model_suggests(cli):
    code, _, err = cli("estimate", "--model", "llama3-71b", "--ctx", "8k")
    assert code == 2
    assert "llama3-70b" in err
    assert "kvsize models" in err


def test_missing_model_option(cli):
    code, _, err = cli("estimate", "--ctx", "8k")
    assert code == 2
    assert "--model" in err


def test_models_and_gpus_list(cli):
    code, out, _ = cli("models")
    assert code == 0
    assert "llama3-70b" in out
    assert "327,680 B" in out
    code, out, _ = cli("gpus")
    assert code == 0
    assert "h100-sxm" in out


def test_validate_reports_problems(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\nname: x\n", encoding="utf-8")
    code, _, err = cli("validate", str(bad))
    assert code == 2
    assert "bad.yaml" in err
    assert "missing required field" in err
