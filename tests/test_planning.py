"""compare, plan and check: hand-checked answers, formats, and exit codes."""

import csv
import io
import json
from pathlib import Path

import pytest

from kvsize.catalog import load_gpu, load_model
from kvsize.planning import Thresholds, check, plan_for_gpu
from kvsize.sizing import SizingRequest, estimate

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(autouse=True)
def fixed_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setenv("NO_COLOR", "1")


def _same_lines(actual: str, golden_name: str) -> None:
    expected = (GOLDEN / golden_name).read_text(encoding="utf-8")
    assert [line.rstrip() for line in actual.splitlines()] == [line.rstrip() for line in expected.splitlines()]


COMPARE_ARGS = ["compare", "--model", "llama3.1-70b,deepseek-v3", "--gpu", "h100,h200", "--ctx", "32k,128k",
                "--kv-cache-dtype", "bf16", "--kv-cache-dtype", "fp8", "--tp", "8"]  # fmt: skip


@pytest.mark.parametrize("output_format", ["table", "csv", "markdown", "json"])
def test_compare_golden_outputs(cli, output_format):
    code, out, err = cli(*COMPARE_ARGS, "--format", output_format)
    assert code == 0
    assert err == ""
    _same_lines(out, f"compare.{output_format}.txt")


def test_compare_rows_match_estimate(cli):
    """Each compare row has exactly the keys and values of `estimate --json` for the same options."""
    _, out, _ = cli(*COMPARE_ARGS, "--json")
    rows = json.loads(out)["rows"]
    assert len(rows) == 2 * 2 * 2 * 2
    for row in rows:
        code, single, _ = cli("estimate", "--model", row["model"], "--gpu", row["gpu"], "--ctx",
                              str(row["context_tokens"]), "--kv-cache-dtype", row["kv_cache_dtype"],
                              "--tp", str(row["tensor_parallel_size"]), "--json")  # fmt: skip
        assert code == 0
        assert json.loads(single) == row


def test_compare_keeps_rows_that_do_not_fit(cli):
    # DeepSeek-V3's fp8 weights (671e9 bytes) need 78.1 GiB per GPU at TP 8: no H100 row fits.
    _, out, _ = cli(*COMPARE_ARGS, "--json")
    rows = json.loads(out)["rows"]
    failing = [row for row in rows if not row["fits"]]
    assert {row["model"] for row in failing} == {"deepseek-v3"}
    assert {row["gpu"] for row in failing} == {"h100-sxm"}


def test_compare_baseline_ratio(cli):
    # DeepSeek-V2's latent cache against DeepSeek 67B's GQA cache, both bf16:
    # 60 x 576 x 2 = 69,120 bytes against 95 x 8 x 256 x 2 = 389,120 bytes = 0.178x.
    _, out, _ = cli("compare", "--model", "deepseek-v2,deepseek-67b", "--ctx", "4k", "--baseline", "deepseek-67b", "--json")
    ratios = json.loads(out)["kv_ratio_to_baseline"]
    assert ratios[1] == 1.0
    assert ratios[0] == pytest.approx(69120 / 389120)
    _, table, _ = cli("compare", "--model", "deepseek-v2,deepseek-67b", "--ctx", "4k", "--baseline", "deepseek-67b")
    assert "0.18x" in table


def test_compare_sort_descending(cli):
    _, out, _ = cli("compare", "--model", "llama3.1-8b,qwen2.5-7b,mistral-7b", "--ctx", "32k", "--sort=-max_batch_size", "--json")
    batches = [row["max_batch_size"] for row in json.loads(out)["rows"]]
    assert batches == sorted(batches, reverse=True)


def test_compare_columns_and_csv(cli):
    _, out, _ = cli("compare", "--model", "llama3.1-8b,qwen2.5-7b", "--ctx", "8k", "--columns", "model,kv_bytes_per_token,fits", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows == [
        {"model": "llama3.1-8b", "kv_bytes_per_token": "131072", "fits": "true"},  # 32 x 8 x 128 x 4
        {"model": "qwen2.5-7b", "kv_bytes_per_token": "57344", "fits": "true"},  # 28 x 4 x 128 x 4
    ]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--columns", "model,nonsense"], "--columns"),
        (["--sort", "nonsense"], "--sort"),
        (["--baseline", "9"], "--baseline"),
        (["--baseline", "qwen3-8b"], "--baseline"),
        (["--format", "yaml"], "--format"),
        (["--ctx", "8k,,16k"], "--ctx"),
    ],
)
def test_compare_invalid_input(cli, args, fragment):
    base = ["compare", "--model", "llama3.1-8b"]
    if "--ctx" not in args:
        base += ["--ctx", "8k"]
    code, out, err = cli(*base, *args)
    assert code == 2
    assert out == ""
    assert fragment in err


# --- plan -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "batch", "tensor_parallel_size"),
    [
        # TP 2: weights 70,553,706,496 per GPU, budget 76,968,728,985 - that - 2 GiB = 4,267,538,841;
        # 8192 tokens x 163,840 bytes per token per GPU = 1,342,177,280 fits.
        (8192, 1, 2),
        # 32768 x 163,840 = 5,368,709,120 exceeds TP 2's budget. TP 4: weights 35,276,853,248,
        # budget 39,544,392,089; KV 32768 x 81,920 = 2,684,354,560 fits.
        (32768, 1, 4),
        # 64 x 8192 x 81,920 = 42,949,672,960 exceeds TP 4's budget. TP 8: weights 17,638,426,624,
        # budget 57,182,818,713; KV 64 x 8192 x 40,960 = 21,474,836,480 fits.
        (8192, 64, 8),
    ],
)
def test_plan_picks_smallest_tp(context, batch, tensor_parallel_size):
    option = plan_for_gpu(load_model("llama3-70b"), load_gpu("h100"), SizingRequest(context_tokens=context, batch_size=batch))
    assert option.fits
    assert option.num_gpus == tensor_parallel_size


def test_plan_needs_multi_node():
    # Llama 3.1 405B in bf16: 810,108,..., bytes of weights; 8 H100s hold 101 GB each, over the
    # 76.97 GB usable, so only 16 GPUs (two nodes) fit.
    option = plan_for_gpu(load_model("llama3.1-405b"), load_gpu("h100"), SizingRequest(context_tokens=8192))
    assert option.num_gpus == 16


def test_plan_reason_weights():
    option = plan_for_gpu(load_model("llama3.1-405b"), load_gpu("t4"), SizingRequest(context_tokens=8192))
    assert not option.fits
    assert option.reason.startswith("weights alone do not fit")


def test_plan_reason_kv():
    option = plan_for_gpu(load_model("llama3.1-8b"), load_gpu("l4"),
                          SizingRequest(context_tokens=131072, batch_size=4096))  # fmt: skip
    assert not option.fits
    assert option.reason.startswith("KV does not fit")


def test_plan_json_ranks_by_gpu_count(cli):
    # Llama 3.1 405B in bf16 is 811,706,777,600 bytes of weights. H200 (135.68e9 usable) and B200
    # (173.04e9 usable) first fit at TP 8 (101.46e9 per GPU); H100 (76.97e9 usable) needs TP 16;
    # a T4 (14.50e9 usable) cannot hold 25.37e9 per GPU even at TP 32.
    code, out, _ = cli("plan", "--model", "llama3.1-405b", "--ctx", "8k", "--gpu", "t4,h100,b200,h200", "--json")
    assert code == 0
    options = json.loads(out)["options"]
    assert [(option["gpu"], option["num_gpus"]) for option in options] == [
        ("h200", 8),  # same count as B200, less total memory (8 x 150.75e9 < 8 x 192.27e9)
        ("b200", 8),
        ("h100-sxm", 16),
        ("t4", None),
    ]
    assert options[-1]["fits"] is False
    assert options[-1]["reason"].startswith("weights alone do not fit")
    assert options[0]["estimate"]["weights_bytes"] == 811706777600


# --- check ------------------------------------------------------------------------


def test_check_pass_exit_zero(cli):
    code, out, err = cli("check", "--model", "llama3.1-70b", "--ctx", "128k", "--batch", "2", "--tp", "4")
    assert code == 0
    assert out.startswith("PASS ")
    assert out.count("\n") == 1


def test_check_fail_exit_one(cli):
    code, out, _ = cli("check", "--model", "llama3.1-70b", "--ctx", "128k", "--batch", "16", "--tp", "4")
    assert code == 1
    assert out.startswith("FAIL ")
    assert "KV cache does not fit" in out


@pytest.mark.parametrize(
    ("extra", "expected_code", "fragment"),
    [
        # TP 4, 128k: max batch 3 (39,544,392,089 // 10,737,418,240).
        (["--min-batch", "3"], 0, "PASS"),
        (["--min-batch", "4"], 1, "below --min-batch 4"),
        # Batch 2 uses 20 GiB of the 36.83 GiB budget: 54.3%.
        (["--max-kv-fraction", "0.6"], 0, "PASS"),
        (["--max-kv-fraction", "0.5"], 1, "--max-kv-fraction"),
        # Each of 2 sequences can reach 39,544,392,089 // (2 x 81,920) = 241,359 tokens, but the
        # model's limit is 131,072: 100k passes, 200k fails on the limit, 256k on memory too.
        (["--min-context", "100k"], 0, "PASS"),
        (["--min-context", "200k"], 1, "exceeds llama3.1-70b's max_position_embeddings"),
        (["--min-context", "256k"], 1, "below --min-context"),
        (["--min-batch", "0"], 2, "--min-batch"),
        (["--max-kv-fraction", "1.5"], 2, "--max-kv-fraction"),
        (["--min-context", "lots"], 2, "--min-context"),
    ],
)
def test_check_thresholds(cli, extra, expected_code, fragment):
    code, out, err = cli("check", "--model", "llama3.1-70b", "--ctx", "128k", "--batch", "2", "--tp", "4", *extra)
    assert code == expected_code
    assert fragment in (out + err)


def test_check_json(cli):
    code, out, _ = cli("check", "--model", "llama3.1-70b", "--ctx", "128k", "--batch", "16", "--tp", "4", "--json")
    data = json.loads(out)
    assert code == 1
    assert data["passed"] is False
    assert data["failures"]
    assert data["fits"] is False


def test_check_collects_every_failure():
    result = estimate(load_model("llama3.1-70b"), load_gpu("h100"),
                      SizingRequest(context_tokens=131072, batch_size=16, tensor_parallel_size=4))  # fmt: skip
    verdict = check(result, Thresholds(min_batch_size=8, min_context_tokens=65536, max_kv_fraction=0.8))
    assert len(verdict.failures) == 4


# --- listing ------------------------------------------------------------------------


def test_models_filters(cli):
    _, out, _ = cli("models", "--attention", "mla", "--json")
    ids = {entry["id"] for entry in json.loads(out)["models"]}
    assert {"deepseek-v3", "kimi-k2", "deepseek-v2"} <= ids
    assert "llama3-70b" not in ids
    _, out, _ = cli("models", "--family", "llama", "70b", "--json")
    ids = {entry["id"] for entry in json.loads(out)["models"]}
    assert ids == {"llama2-70b", "llama3-70b", "llama3.1-70b", "llama3.3-70b"}


def test_models_every_format(cli):
    for output_format in ("table", "csv", "markdown", "json"):
        code, out, _ = cli("models", "qwen3-8b", "--format", output_format)
        assert code == 0
        assert "qwen3-8b" in out
        assert "147,456" in out or "147456" in out  # 36 layers x 8 x 128 x 4


def test_gpus_vendor_filter(cli):
    _, out, _ = cli("gpus", "--vendor", "amd", "--json")
    assert {entry["id"] for entry in json.loads(out)["gpus"]} == {"mi250x", "mi300x", "mi325x", "mi355x"}


def test_show_model_and_gpu(cli):
    code, out, _ = cli("show", "llama-3-70b", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["id"] == "llama3-70b"
    assert data["path"] == "configs/models/llama3-70b.yaml"
    assert data["source"]
    code, out, _ = cli("show", "h100")
    assert code == 0
    assert "81559" in out or "85,520,809,984" in out


def test_show_unknown(cli):
    code, _, err = cli("show", "nothing-like-this")
    assert code == 2
    assert err.startswith("error: ")


def test_curve_falls_back_to_table(cli):
    code, out, _ = cli("curve", "--model", "mistral-7b,llama3.1-8b", "--gpu", "l40s")
    assert code == 0
    assert "mistral-7b" in out
    _, out, _ = cli("curve", "--model", "mistral-7b", "--gpu", "l40s", "--json")
    points = json.loads(out)["points"]
    # Mistral 7B v0.1 keeps 4096 tokens per layer, so memory is flat from 4k to 32k.
    by_context = {point["context_tokens"]: point["memory_bytes_per_gpu"] for point in points}
    assert by_context[4096] == by_context[32768]
    assert by_context[2048] < by_context[4096]


def test_curve_chart_draws_budget_line():
    from kvsize.curve import curve_points, draw_chart

    gpu = load_gpu("l40s")
    series = curve_points([load_model("llama3.1-8b")], gpu, SizingRequest(context_tokens=1))
    chart = draw_chart(series, gpu, width=80)
    lines = chart.splitlines()
    assert all(len(line) <= 80 for line in lines[:-1])
    assert any(set(line.split("|", 1)[-1]) == {"-"} for line in lines if "|" in line)
    assert "*" in chart
