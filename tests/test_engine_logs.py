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
    # 35.65 GiB = int(35.65 x 2^30) = 38,278,896,025 B; // (16 x 131,072 B) = 18,252 blocks; x 16 = 292,032 tokens.
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
    """Piped, the engine and log tables render as recorded: natural width, no wrapping, no trailing spaces."""
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = cli(*args)
    assert code == 0
    expected = (GOLDEN / golden).read_text(encoding="utf-8")
    assert out.splitlines() == expected.splitlines()
    # The recorded lines are wider than COLUMNS, so nothing was wrapped to it.
    assert max(len(line) for line in out.splitlines()) > 80
    assert not [line for line in out.splitlines() if line != line.rstrip()]


# ---------------------------------------------------------------------------
# Logs holding several startups


def two_startups(first: str, second: str) -> str:
    return read(first).rstrip("\n") + "\n" + read(second)


def test_parse_log_reads_last_startup_only():
    """A restart in one log: model, parallelism and figures all come from the last startup."""
    text = two_startups("vllm_v0_llama31_8b.log", "vllm_v1_gpt_oss_120b_tp4.log")
    facts = parse_log(text)
    assert facts.startups == 2
    # vllm_v0_llama31_8b.log has 10 lines; the second log opens with a platform line, then its API-server line, line 12.
    assert facts.startup_line == 12
    assert facts.model_name == "/mnt/weights/gpt-oss-120b"
    assert facts.tensor_parallel_size == 4
    assert facts.kv_cache_tokens == 2640144
    assert facts.gpu_blocks is None  # the first startup's "# GPU blocks" line is ignored
    assert facts.vllm_v0 is False


def test_parse_log_reversed_startups():
    facts = parse_log(two_startups("vllm_v1_gpt_oss_120b_tp4.log", "vllm_v0_llama31_8b.log"))
    assert facts.startups == 2
    assert facts.model_name == "/home/ops/checkpoints/Meta-Llama-3.1-8B-Instruct"
    assert facts.tensor_parallel_size == 1
    assert facts.kv_cache_tokens is None
    assert facts.gpu_blocks == 1952
    assert facts.vllm_v0 is True


def test_log_command_restart_uses_last_startup(cli, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(two_startups("vllm_v0_llama31_8b.log", "vllm_v1_gpt_oss_120b_tp4.log")))
    code, out, err = cli("log", "-", "--gpu", "a100-80gb")
    assert code == 0
    assert "OpenAI gpt-oss-120b on NVIDIA A100 80GB SXM4, TP 4, PP 1" in out
    assert has_row(out, "2,640,144", "2,640,080")
    assert " no " not in out
    assert "note: the log holds 2 engine startups; kvsize read the last one, from line 12" in err


def test_log_command_restart_json_names_startups(cli, tmp_path):
    path = tmp_path / "restart.log"
    path.write_text(two_startups("vllm_v1_gpt_oss_120b_tp4.log", "vllm_v0_llama31_8b.log"), encoding="utf-8")
    code, out, _ = cli("log", str(path), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["model"] == "llama3.1-8b"
    assert data["tensor_parallel_size"] == 1
    assert (data["startups"], data["startup_line"]) == (2, 15)
    assert any("2 engine startups" in note for note in data["notes"])
    assert all(row["within_tolerance"] is not False for row in data["rows"])


def test_last_startup_without_figures_is_named():
    """A restart that stopped before allocating the cache: the error names the last startup."""
    text = read("vllm_v1_gpt_oss_120b_tp4.log") + "INFO vLLM API server version 0.10.1.1\nINFO non-default args: {'model': 'x'}\n"
    with pytest.raises(InvalidInputError, match="the last of the 2 vllm startups in the log"):
        parse_log(text)


def test_one_startup_is_not_split():
    """The API-server line and the engine line of one vLLM startup, and TensorRT-LLM's version line
    printed once per MPI rank, stay one startup."""
    assert parse_log(read("vllm_v1_gpt_oss_120b_tp4.log")).startups == 1
    ranks = "[TensorRT-LLM] TensorRT-LLM version: 0.8.0\n" * 3 + read("trtllm_llama2_7b.log")
    facts = parse_log(ranks)
    assert facts.startups == 1
    assert facts.kv_cache_tokens == 132608


def test_llamacpp_restart_reads_last_build():
    text = two_startups("llamacpp_qwen25_3b.log", "llamacpp_qwen25_3b.log").replace("4/1 seqs", "2/1 seqs", 1)
    facts = parse_log(text)
    assert facts.startups == 2
    assert facts.n_seq == 4  # the first startup's 2 sequences are ignored


# ---------------------------------------------------------------------------
# Logs that print only some figures, restated figures and input files


def log_without(tmp_path, name: str, *markers: str) -> str:
    lines = [line for line in read(name).splitlines() if not any(marker in line for marker in markers)]
    path = tmp_path / f"part-{name}"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_log_with_only_available_memory(cli, tmp_path):
    """The KV memory alone: without the GPU nothing can be checked, and the message names what is missing."""
    path = log_without(tmp_path, "vllm_v1_gpt_oss_120b_tp4.log", "GPU KV cache size", "Maximum concurrency")
    code, out, err = cli("log", path)
    assert code == 0
    assert "the log prints the KV memory (45.32 GiB) but no token pool" in out
    assert "pass --gpu" in out
    assert "prints no KV memory" not in out
    # The note gives the pool kvsize cuts from the printed memory.
    assert "2,640,080 tokens" in err
    code, out, _ = cli("log", path, "--gpu", "a100-80gb")
    assert code == 0
    assert has_row(out, "45.32 GiB", "45.25 GiB")
    assert "agrees:" in out


def test_log_with_only_token_pool(cli, tmp_path):
    """The pool alone: with --gpu it is checked against the pool of kvsize's predicted memory."""
    path = log_without(tmp_path, "vllm_v1_gpt_oss_120b_tp4.log", "Available KV cache memory")
    code, out, _ = cli("log", path)
    assert code == 0
    assert "the log prints the pool but not the KV memory behind it" in out
    code, out, _ = cli("log", path, "--gpu", "a100-80gb", "--json")
    assert code == 0
    rows = {row["figure"]: row for row in json.loads(out)["rows"]}
    assert rows["KV cache tokens"]["printed"] == 2640144
    assert rows["KV cache tokens"]["within_tolerance"] is True
    assert "the log prints no KV memory" in rows["KV cache tokens"]["basis"]


def test_sglang_memory_restated_without_gpu(cli):
    """Without --gpu, SGLang's available memory repeats its printed free-memory lines: not a match."""
    code, out, _ = cli("log", str(LOGS / "sglang_qwq_32b_tp4.log"), "--model", "qwen2.5-32b", "--json")
    assert code == 0
    rows = {row["figure"]: row for row in json.loads(out)["rows"]}
    restated = rows["available KV memory"]
    assert restated["kind"] == "restated"
    assert restated["within_tolerance"] is None
    assert rows["KV cache tokens"]["within_tolerance"] is True
    code, out, _ = cli("log", str(LOGS / "sglang_qwq_32b_tp4.log"), "--model", "qwen2.5-32b")
    assert re.search(r"available KV memory .* restated +restated from the printed free memory", out)
    # With the GPU, kvsize predicts it: 2.73 GiB against the printed 2.85 GiB.
    code, out, _ = cli("log", str(LOGS / "sglang_qwq_32b_tp4.log"), "--model", "qwen2.5-32b", "--gpu", "l4", "--json")
    predicted = {row["figure"]: row for row in json.loads(out)["rows"]}["available KV memory"]
    assert predicted["kind"] == "check"
    assert predicted["within_tolerance"] is True
    assert round(predicted["predicted"], 2) == 2.73


def test_log_json_gpu_matches_table(cli):
    """Without --gpu the JSON names no GPU, as the table does; with it, the GPU's id."""
    code, out, _ = cli("log", str(LOGS / "vllm_v0_llama31_8b.log"), "--json")
    data = json.loads(out)
    assert data["gpu"] is None
    assert data["gpu_memory_bytes"] == int(Decimal("23.58") * GiB)
    code, out, _ = cli("log", str(LOGS / "vllm_v0_llama31_8b.log"), "--gpu", "rtx-3090", "--json")
    assert json.loads(out)["gpu"] == "rtx-3090"


def test_log_command_empty_file_and_folder(cli, tmp_path, monkeypatch):
    import io

    empty = tmp_path / "empty.log"
    empty.write_text("\n  \n", encoding="utf-8")
    code, out, err = cli("log", str(empty))
    assert (code, out, err) == (2, "", f"error: empty log file: {empty}\n")
    code, out, err = cli("log", str(tmp_path))
    assert (code, out) == (2, "")
    assert err == f"error: {tmp_path} is a folder; give a log file, or '-' to read stdin\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = cli("log", "-")
    assert code == 2
    assert err.startswith("error: empty log on stdin")
    with pytest.raises(InvalidInputError, match="the log is empty"):
        parse_log("  \n")


# ---------------------------------------------------------------------------
# estimate --engine: the verdict for --batch, and options checked per engine


def test_estimate_engine_batch_changes_verdict(cli):
    """10 requests of 32k need 10 x 2,048 = 20,480 blocks; 35.65 GiB holds 18,252, enough for 8."""
    args = ("estimate", "-m", "llama3.1-8b", "--ctx", "32k", "--engine", "vllm", "--kv-cache-memory", "35.65GiB")
    code, out, _ = cli(*args, "--batch", "10")
    assert code == 0
    assert "Fits                        no: 10 requests of 32,768 tokens need 20,480 blocks of 16 tokens; " \
           "the pool has 18,252, enough for 8" in out
    assert "10 requests of max_model_len 32,768 tokens" in out
    code, out, _ = cli(*args, "--batch", "8")
    assert "yes: 8 requests of 32,768 tokens need 16,384 of the pool's 18,252 blocks" in out


def test_estimate_engine_json_has_one_verdict(cli):
    """With --engine, fits and max_batch_size come from the engine's pool, not the neutral budget."""
    code, out, _ = cli("estimate", "-m", "llama3.1-8b", "--ctx", "32k", "--engine", "vllm",
                       "--kv-cache-memory", "35.65GiB", "--batch", "10", "--json")  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["fits"] is False
    assert data["engine_fits"] is False
    assert data["max_batch_size"] == 8  # 18,252 // 2,048
    assert data["max_context_tokens"] is None
    assert data["kv_budget_bytes_per_gpu"] == 38278896025  # int(35.65 x 2^30)
    assert data["reserve_bytes_per_gpu"] is None
    assert data["usable_memory_bytes_per_gpu"] is None
    assert data["engine_fit_reason"].startswith("no: 10 requests")


def test_estimate_engine_vllm_refusal_reason(cli):
    """One request of 128k needs 8,192 blocks; 10 GiB holds 5,120, and vLLM would not start."""
    code, out, _ = cli("estimate", "-m", "llama3.1-8b", "--ctx", "128k", "--engine", "vllm", "--kv-cache-memory", "10GiB")
    assert code == 0
    assert "no: 1 request of 131,072 tokens needs 8,192 blocks of 16 tokens; the pool has 5,120" in out
    assert "vLLM refuses to start" in out


def test_estimate_engine_header_names_parallel_sizes(cli):
    code, out, _ = cli("estimate", "-m", "llama3.1-70b", "--ctx", "8k", "--engine", "vllm", "--tp", "2", "--pp", "2",
                       "--kv-cache-memory", "20GiB")  # fmt: skip
    assert code == 0
    assert out.startswith("Meta Llama 3.1 70B on TP 2 x PP 2 x NVIDIA H100 SXM5 80GB (4 GPUs), as vLLM allocates it")


def test_estimate_engine_vllm_data_parallel(cli):
    """--dp 3: three pools of 10 GiB (5,120 blocks, 10 requests of 8k each); 25 requests need 9 per rank."""
    code, out, _ = cli("estimate", "-m", "llama3.1-8b", "--ctx", "8k", "--engine", "vllm", "--dp", "3",
                       "--batch", "25", "--kv-cache-memory", "10GiB")  # fmt: skip
    assert code == 0
    assert "TP 1 x PP 1 x DP 3 x NVIDIA H100 SXM5 80GB (3 GPUs)" in out
    assert "10.00x at 8,192 tokens per request per DP rank, 30.00x over 3 DP ranks" in out
    assert "yes: 9 requests of 8,192 tokens per DP rank (25 over 3 DP ranks) need 4,608 of the pool's 5,120" in out
    code, out, _ = cli("estimate", "-m", "llama3.1-8b", "--ctx", "8k", "--engine", "vllm", "--dp", "3",
                       "--batch", "31", "--kv-cache-memory", "10GiB", "--json")  # fmt: skip
    data = json.loads(out)
    assert (data["fits"], data["max_batch_size"], data["data_parallel_size"]) == (False, 30, 3)


@pytest.mark.parametrize(("option", "value"), [
    ("--kv-cache-memory", "35GiB"),
    ("--pipeline-parallel-size", "2"),
    ("--pp", "1"),
    ("--data-parallel-size", "4"),
    ("--block-size", "32"),
    ("--max-model-len", "8k"),
    ("--max-num-batched-tokens", "4096"),
    ("--max-num-seqs", "64"),
    ("--mem-fraction-static", "0.5"),
    ("--free-gpu-memory-fraction", "0.5"),
    ("--enable-dp-attention", None),
    ("--enforce-eager", None),
    ("--engine-version", "0.10.1"),
])  # fmt: skip
def test_engine_option_without_engine_is_rejected(cli, option, value):
    extra = (option,) if value is None else (option, value)
    code, out, err = cli("estimate", "-m", "llama3.1-8b", "--ctx", "32k", *extra)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    name = {"--pp": "--pipeline-parallel-size"}.get(option, option)
    assert err.startswith(f"error: {name} needs --engine vllm, sglang, trtllm or llama.cpp")


@pytest.mark.parametrize(("engine", "option", "value", "named"), [
    ("sglang", "--gpu-memory-utilization", "0.5", "--mem-fraction-static"),
    ("trtllm", "--gpu-memory-utilization", "0.5", "--free-gpu-memory-fraction"),
    ("llama.cpp", "--gpu-memory-utilization", "0.5", "no memory fraction"),
    ("vllm", "--mem-fraction-static", "0.5", "--gpu-memory-utilization"),
    ("trtllm", "--mem-fraction-static", "0.5", "--free-gpu-memory-fraction"),
    ("sglang", "--free-gpu-memory-fraction", "0.5", "--mem-fraction-static"),
    ("trtllm", "--enforce-eager", None, "vLLM's switch"),
    ("sglang", "--enforce-eager", None, "--disable-cuda-graph"),
    ("vllm", "--enable-dp-attention", None, "SGLang's switch"),
    ("trtllm", "--data-parallel-size", "2", "one replica"),
    ("llama.cpp", "--max-model-len", "8k", "--ctx"),
    ("llama.cpp", "--block-size", "32", "pads its cells to 256"),
    ("llama.cpp", "--max-num-seqs", "4", "--batch"),
    ("sglang", "--max-num-batched-tokens", "4096", "--chunked-prefill-size"),
    ("llama.cpp", "--engine-version", "5712", "one set of llama.cpp rules"),
])  # fmt: skip
def test_option_unused_by_engine_is_rejected(cli, engine, option, value, named):
    extra = (option,) if value is None else (option, value)
    code, out, err = cli("estimate", "-m", "llama3.1-8b", "--ctx", "8k", "--engine", engine, *extra)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert option in err
    assert named in err


def test_llamacpp_honours_kv_cache_memory(cli):
    """llama.cpp's fixed cache (4 x 32k cells = 16 GiB for Llama 3.1 8B) is checked against the given memory."""
    args = ("estimate", "-m", "llama3.1-8b", "--ctx", "32k", "--batch", "4", "--engine", "llama.cpp")
    code, out, _ = cli(*args, "--kv-cache-memory", "20GiB")
    assert code == 0
    assert "yes: 4 sequences of 32,768 tokens take 16.00 GiB (131,072 cells) of the 20.00 GiB given as free" in out
    code, out, _ = cli(*args, "--kv-cache-memory", "10GiB")
    # One sequence is 32,768 x 131,072 B = 4 GiB, so 10 GiB has room for 2.
    assert "more than the 10.00 GiB given as free for it, which has room for 2" in out


@pytest.mark.parametrize(("args", "fragment"), [
    (("--engine", "vllm", "--engine-version", "abc"), "kvsize knows vLLM v0 (the V0 engine), v1, or 0.1 to 0.29"),
    (("--engine", "vllm", "--engine-version", "9.9"), "0.1 to 0.29"),
    (("--engine", "sglang", "--engine-version", "xyz"), "kvsize knows SGLang 0.4 to 0.5"),
    (("--engine", "trtllm", "--engine-version", "0.10abc"), "kvsize knows TensorRT-LLM 0.5 to 1.x"),
    (("--engine", "vllm", "--block-size", "7"), "1, 8, 16, 32, 64, 128, 256"),
    (("--engine", "vllm", "--block-size", "100000"), "1, 8, 16, 32, 64, 128, 256"),
    (("--engine", "trtllm", "--block-size", "48"), "power of 2"),
    (("--engine", "llama.cpp", "--kv-cache-dtype", "fp8"), "f16, bf16, f32, q8_0, q4_0"),
    (("--engine", "llama.cpp", "--kv-cache-dtype", "nvfp4"), "q8_0"),
    (("--engine", "vllm", "--kv-cache-dtype", "int4"), "fp8_e4m3"),
    (("--engine", "sglang", "--kv-cache-dtype", "int8"), "fp4_e2m1"),
    (("--engine", "vllm", "--max-num-batched-tokens", "100"), "below max_num_seqs (1,024"),
    (("--engine", "vllm", "--max-model-len", ""), "--max-model-len"),
])  # fmt: skip
def test_engine_values_checked_per_engine(cli, args, fragment):
    code, out, err = cli("estimate", "-m", "llama3.1-8b", "--ctx", "8k", *args)
    assert (code, out) == (2, "")
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert fragment in err


@pytest.mark.parametrize("args", [
    ("--engine", "vllm", "--engine-version", "0.6.4.post1"),
    ("--engine", "vllm", "--engine-version", "v0"),
    ("--engine", "vllm", "--engine-version", "0.15.2rc1.dev93"),
    ("--engine", "sglang", "--engine-version", "0.4.3.post4"),
    ("--engine", "trtllm", "--engine-version", "0.13.0", "--block-size", "64"),
    ("--engine", "trtllm", "--kv-cache-dtype", "int8"),
    ("--engine", "vllm", "--block-size", "128"),
    ("--engine", "llama.cpp", "--kv-cache-dtype", "q8_0"),
])  # fmt: skip
def test_engine_values_accepted(cli, args):
    code, out, err = cli("estimate", "-m", "llama3.1-8b", "--ctx", "8k", *args)
    assert code == 0, err
    assert "Fits" in out


def test_engine_warnings_for_unlikely_settings(cli):
    code, _, err = cli("estimate", "-m", "llama3.1-8b", "--ctx", "8k", "--engine", "vllm",
                       "--kv-cache-memory", "200GiB", "--max-model-len", "2m")  # fmt: skip
    assert code == 0
    assert "warning: KV cache memory of 200.00 GiB per GPU is more than the 79.65 GiB NVIDIA H100 SXM5 80GB reports" in err
    assert ("warning: max_model_len of 2,097,152 tokens exceeds llama3.1-8b's max_position_embeddings (131,072); "
            "vLLM rejects it unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 is set") in err  # fmt: skip
