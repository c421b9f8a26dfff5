"""Reading engine startup logs and the `kvsize log` and `estimate --engine` commands."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from kvsize.engine_logs import PrintedSize, detect_engine, model_name_candidates, parse_log
from kvsize.errors import InvalidInputError
from kvsize.units import GiB, MiB

LOGS = Path(__file__).parent / "data" / "logs"
SPECS = Path(__file__).parent / "data" / "specs"


@pytest.fixture(autouse=True)
def fixed_width(monkeypatch):
    """Render tables at 160 columns without colour, whatever the terminal."""
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setenv("NO_COLOR", "1")


def has_row(out: str, printed: str, predicted: str) -> bool:
    """Return whether a table line shows `printed` and then `predicted`, however wide the columns."""
    return re.search(re.escape(printed) + r"\s+" + re.escape(predicted), out) is not None


def read(name: str) -> str:
    return (LOGS / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(("name", "engine"), [
    ("vllm_v1_gpt_oss_120b_tp4.log", "vllm"),
    ("vllm_v0_llama31_8b.log", "vllm"),
    ("sglang_qwq_32b_tp4.log", "sglang"),
    ("trtllm_llama2_7b.log", "trtllm"),
    ("llamacpp_qwen25_3b.log", "llama.cpp"),
])  # fmt: skip
def test_detect_engine(name, engine):
    assert detect_engine(read(name)) == engine


def test_parse_vllm_v1_log():
    facts = parse_log(read("vllm_v1_gpt_oss_120b_tp4.log"))
    assert facts.engine_version == "0.10.1.1"
    assert facts.vllm_v0 is False
    assert facts.model_name == "/mnt/weights/gpt-oss-120b"
    assert facts.tensor_parallel_size == 4
    assert facts.gpu_memory_utilization == Decimal("0.8")
    assert facts.max_model_len == 16384
    assert facts.max_num_batched_tokens == 2048
    assert facts.weights == PrintedSize(int(Decimal("17.2217") * GiB), GiB // 20000)
    assert facts.available_kv_memory.bytes == int(Decimal("45.32") * GiB)
    assert facts.kv_cache_tokens == 2640144
    assert facts.max_concurrency == Decimal("284.25")
    assert facts.concurrency_tokens == 16384


def test_parse_vllm_v0_log():
    facts = parse_log(read("vllm_v0_llama31_8b.log"))
    assert facts.vllm_v0 is True
    assert facts.total_gpu_memory.bytes == int(Decimal("23.58") * GiB)
    # vLLM V0 prints "GB" for 2^30 bytes.
    assert facts.weights.bytes == int(Decimal("14.9888") * GiB)
    assert facts.available_kv_memory.bytes == int(Decimal("3.81") * GiB)
    assert (facts.gpu_blocks, facts.cpu_blocks) == (1952, 2048)
    assert facts.gpu_memory_utilization == Decimal("0.90")


def test_parse_vllm_v1_profile_line():
    """vLLM's debug profile line gives the GPU's total and each term of the budget."""
    line = ("DEBUG 08-14 14:07:22 [gpu_worker.py:310] Free memory on device (177.66/178.36 GiB) on startup. "
            "Desired GPU memory utilization is (0.9, 160.53 GiB). Actual usage is 8.58 GiB for weight, "
            "9.96 GiB for peak activation, 0.07 GiB for non-torch memory, and 0.65 GiB for CUDAGraph memory.\n"
            "INFO 08-14 14:07:22 [gpu_worker.py:320] Available KV cache memory: 141.27 GiB\n")  # fmt: skip
    facts = parse_log(line, "vllm")
    assert facts.total_gpu_memory.bytes == int(Decimal("178.36") * GiB)
    assert facts.activation_peak.bytes == int(Decimal("9.96") * GiB)
    assert facts.non_torch_memory.bytes == int(Decimal("0.07") * GiB)
    assert facts.available_kv_memory.bytes == int(Decimal("141.27") * GiB)


def test_parse_sglang_log():
    facts = parse_log(read("sglang_qwq_32b_tp4.log"))
    assert facts.model_name == "/opt/models/QwQ-32B"
    assert facts.tensor_parallel_size == 4
    assert facts.mem_fraction_static == Decimal("0.85")
    assert facts.free_before_weights.bytes == int(Decimal("21.63") * GiB)
    assert facts.free_after_weights.bytes == int(Decimal("6.09") * GiB)
    assert facts.weights.bytes == int(Decimal("15.54") * GiB)
    assert facts.kv_cache_tokens == 46611
    assert facts.max_model_len == 131072
    assert facts.block_size == 1


def test_parse_trtllm_log():
    facts = parse_log(read("trtllm_llama2_7b.log"))
    assert facts.engine_version == "0.8.0"
    assert facts.kv_size == PrintedSize(69524783104, 0)
    assert facts.kv_cache_tokens == 132608


def test_parse_llamacpp_log():
    facts = parse_log(read("llamacpp_qwen25_3b.log"))
    assert facts.model_name == "Qwen2.5 3B Instruct"
    assert facts.kv_cache_tokens == 2048
    assert facts.n_seq == 4
    assert facts.kv_cache_dtype == "f16"
    assert facts.flash_attn is False
    assert facts.kv_size.bytes == 72 * MiB


def test_printed_size_half_step():
    """A figure printed with two decimals is known to half of 0.01 of its unit."""
    size = PrintedSize.parse("3.81", "GiB")
    assert size.bytes == int(Decimal("3.81") * GiB)
    assert size.half_step_bytes == GiB // 200


def test_log_without_figures_is_rejected():
    with pytest.raises(InvalidInputError, match="no KV-cache figure"):
        parse_log("INFO vLLM API server version 0.10.1\n")
    with pytest.raises(InvalidInputError, match="no known engine"):
        parse_log("hello\n")


def test_model_name_candidates():
    assert model_name_candidates("/srv/models/Qwen2.5-7B-Instruct")[-1] == "Qwen2.5-7B"
    assert model_name_candidates("Qwen2.5 3B Instruct")[-1] == "Qwen2.5 3B"


# ---------------------------------------------------------------------------
# The commands


def test_log_command_vllm_hybrid(cli):
    code, out, err = cli("log", str(LOGS / "vllm_v1_gpt_oss_120b_tp4.log"), "--gpu", "a100-80gb")
    assert code == 0
    assert "vLLM 0.10.1.1 log: OpenAI gpt-oss-120b" in out
    assert has_row(out, "2,640,144", "2,640,080")
    assert has_row(out, "284.25x", "284.25x")
    assert has_row(out, "45.32 GiB", "45.25 GiB")
    assert " no " not in out
    assert err == ""


def test_log_command_json(cli):
    code, out, _ = cli("log", str(LOGS / "vllm_v0_llama31_8b.log"), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["engine"] == "vllm"
    assert data["model"] == "llama3.1-8b"
    rows = {row["figure"]: row for row in data["rows"]}
    assert rows["GPU blocks"]["printed"] == 1952
    assert rows["GPU blocks"]["predicted"] == 1950
    assert rows["CPU blocks"]["within_tolerance"] is True
    assert all(row["within_tolerance"] is not False for row in data["rows"])
    # The profile line printed a torch peak of 17.06 GiB with the 14.99 GiB of weights in it.
    assert rows["activation peak"]["printed"] == pytest.approx(17.06 - 14.9888, abs=1e-6)
    assert rows["activation peak"]["tolerance"] is None
    assert rows["non-torch memory"]["printed"] == pytest.approx(0.35, abs=1e-6)


def test_log_command_model_outside_catalog(cli):
    code, out, err = cli("log", str(LOGS / "sglang_qwq_32b_tp4.log"))
    assert code == 2
    assert err.startswith("error: model '/opt/models/QwQ-32B' from the log is not in the catalog; pass --model")
    assert "Traceback" not in err
    code, out, _ = cli("log", str(LOGS / "sglang_qwq_32b_tp4.log"), "--model", "qwen2.5-32b", "--gpu", "l4")
    assert code == 0
    assert has_row(out, "46,611", "46,620")
    # 22.49 GiB (nvidia-smi) - 0.5 driver - 0.5 context = 21.49 GiB free; x 0.85 - 15.54 = 2.73 GiB.
    assert has_row(out, "2.85 GiB", "2.73 GiB")


def test_log_command_spec_file_and_llamacpp(cli):
    code, out, _ = cli("log", str(LOGS / "llamacpp_qwen25_3b.log"), "--model", str(SPECS / "qwen2.5-3b.yaml"))
    assert code == 0
    assert "llama.cpp build 5712 log: Qwen2.5 3B" in out
    assert has_row(out, "72.00 MiB", "72.00 MiB")


def test_log_command_trtllm(cli):
    code, out, _ = cli("log", str(LOGS / "trtllm_llama2_7b.log"), "--model", "llama2-7b")
    assert code == 0
    assert has_row(out, "132,608", "132,608")


def test_log_command_reads_stdin(cli, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(read("vllm_v0_llama31_8b.log")))
    code, out, _ = cli("log", "-")
    assert code == 0
    assert "1,952" in out


def test_log_command_errors(cli):
    code, _, err = cli("log", "/nonexistent/startup.log")
    assert (code, err) == (2, "error: log file not found: /nonexistent/startup.log\n")
    code, _, err = cli("log", str(LOGS / "trtllm_llama2_7b.log"))
    assert code == 2
    assert "does not name its model" in err
    code, _, err = cli("log", str(LOGS / "trtllm_llama2_7b.log"), "--engine", "tgi")
    assert code == 2
    assert "invalid value for --engine" in err


def test_estimate_engine_json_adds_keys(cli):
    code, out, _ = cli("estimate", "-m", "llama3.1-8b", "--ctx", "32k", "--engine", "vllm",
                       "--kv-cache-memory", "35.65GiB", "--json")  # fmt: skip
    assert code == 0
    data = json.loads(out)
    # Keys of the plain estimate stay; the engine's are added.
    assert data["kv_bytes_per_token"] == 131072
    assert data["engine"] == "vllm"
    # 35.65 GiB = 38,278,977,126 B; // (16 x 131,072 B) = 18,252 blocks; x 16 = 292,032 tokens.
    assert data["num_gpu_blocks"] == 18252
    assert data["kv_cache_tokens"] == 292032
    assert data["max_concurrency"] == round(18252 / 2048, 4)
    assert data["kv_cache_memory_is_estimate"] is False
    assert data["max_model_len"] == 32768


def test_estimate_engine_csv_row(cli):
    code, out, _ = cli("estimate", "-m", "llama3.1-8b", "--ctx", "32k", "--engine", "vllm",
                       "--kv-cache-memory", "35.65GiB", "--format", "csv")  # fmt: skip
    assert code == 0
    header, row = out.splitlines()
    values = dict(zip(header.split(","), row.split(",")))
    assert values["kv_cache_tokens"] == "292032"
    assert values["num_gpu_blocks"] == "18252"
    assert values["kv_cache_memory_bytes_per_gpu"] == str(int(35.65 * 2**30))


def test_log_command_markdown(cli):
    code, out, _ = cli("log", str(LOGS / "vllm_v0_llama31_8b.log"), "--format", "markdown")
    assert code == 0
    assert out.startswith("| figure | printed | predicted |")
    assert "| GPU blocks | 1,952 | 1,950 |" in out


def test_estimate_engine_table(cli):
    code, out, _ = cli("estimate", "-m", "gpt-oss-120b", "--ctx", "16k", "--tp", "4", "-g", "a100-80gb",
                       "--engine", "vllm", "--engine-version", "0.10.1.1", "--gpu-memory-utilization", "0.8")  # fmt: skip
    assert code == 0
    assert "as vLLM 0.10.1.1 allocates it" in out
    assert "activation peak" in out
    assert "estimate" in out
    assert "2 groups of 18 layers" in out


@pytest.mark.parametrize("args", [
    ("--engine", "tgi"),
    ("--engine", "vllm", "--max-model-len", "0"),
    ("--engine", "sglang", "--mem-fraction-static", "1.2"),
    ("--engine", "vllm", "--kv-cache-memory", "lots"),
    ("--engine", "vllm", "--pp", "0"),
    ("--engine", "vllm", "--format", "yaml"),
    ("--engine", "vllm", "--reserve", "3GiB"),
    ("--engine", "vllm", "--kv-group-size", "32"),
])  # fmt: skip
def test_estimate_engine_invalid_options(cli, args):
    code, out, err = cli("estimate", "-m", "llama3.1-8b", "--ctx", "8k", *args)
    assert code == 2
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert out == ""


GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize(("golden", "args"), [
    ("estimate_engine_vllm_gpt-oss-120b.txt",
     ("estimate", "-m", "gpt-oss-120b", "--ctx", "16k", "--tp", "4", "-g", "a100-80gb", "--engine", "vllm",
      "--engine-version", "0.10.1.1", "--gpu-memory-utilization", "0.8")),
    ("log_vllm_v0_llama31_8b.txt", ("log", str(LOGS / "vllm_v0_llama31_8b.log"))),
])  # fmt: skip
def test_engine_output_matches_golden(cli, monkeypatch, golden, args):
    """The engine table and the log table render as recorded, at 100 columns without colour."""
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = cli(*args)
    assert code == 0
    expected = (GOLDEN / golden).read_text(encoding="utf-8")
    assert [line.rstrip() for line in out.splitlines()] == [line.rstrip() for line in expected.splitlines()]
