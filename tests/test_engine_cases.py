"""Engine profiles against the figures public engine logs printed (tests/data/engine_cases.yaml).

Each case runs through the same path as `kvsize log`: its settings and printed
figures become LogFacts and `compare_log` pairs every printed figure with
kvsize's prediction. The token pool is predicted from the printed KV memory and
must agree within one block plus the blocks hidden by the rounding of that
memory. Where weights and settings were printed, the available KV memory must
agree within 5%. Cases marked `match: "no"` record an engine's behaviour at
one version; their `mismatch` rows must disagree with the rule.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from conftest import make_model

from kvsize.catalog import load_gpu, load_model
from kvsize.engine_logs import LogFacts, PrintedSize, compare_log, settings_from_log
from kvsize.engines import estimate_engine
from kvsize.engines.sglang import kv_size_bytes
from kvsize.engines.vllm import estimate_max_model_len, needed_bytes_for_one_request
from kvsize.units import GiB, MiB

CASES = yaml.safe_load((Path(__file__).parent / "data" / "engine_cases.yaml").read_text(encoding="utf-8"))["cases"]
PLACEHOLDER_GPU = "h100-sxm"
_SIZE_FIELDS = {"total_gpu_memory", "weights", "available_kv_memory", "free_before_weights", "free_after_weights", "kv_size"}


def cases_with(check: str) -> list[dict]:
    return [pytest.param(case, id=case["id"]) for case in CASES if check in case["checks"]]


def parse_size(text: str) -> PrintedSize:
    number, unit = str(text).split()
    return PrintedSize.parse(number, unit)


def model_for(case: dict):
    if case.get("model"):
        return load_model(case["model"])
    spec = case["model_spec"]
    return make_model(spec["body"], model_id=case["id"], **spec.get("fields", {}))


def gpu_for(case: dict):
    return load_gpu(case["gpu"] or PLACEHOLDER_GPU)


def facts_for(case: dict) -> LogFacts:
    """Build the LogFacts that `kvsize log` would read from the case's log."""
    facts = LogFacts(engine=case["engine"], engine_version=case["engine_version"])
    facts.vllm_v0 = case["engine_version"] == "v0"
    for key, value in case["settings"].items():
        if key in ("gpu_memory_utilization", "mem_fraction_static", "free_gpu_memory_fraction"):
            value = Decimal(value)
        setattr(facts, key, value)
    for key, value in case["printed"].items():
        if key in ("needed_kv_memory", "estimated_max_model_len"):
            continue
        if key == "k_size":
            k_size = parse_size(value)
            key, value = "kv_size", PrintedSize(2 * k_size.bytes, 2 * k_size.half_step_bytes)
        elif key in _SIZE_FIELDS:
            value = parse_size(value)
        elif key == "max_concurrency":
            value = Decimal(value)
        setattr(facts, key, value)
    if case["engine"] == "llama.cpp" and facts.max_model_len is not None:
        facts.max_model_len = None
    return facts


def comparison_for(case: dict):
    return compare_log(facts_for(case), model_for(case), gpu_for(case), gpu_is_known=case["gpu"] is not None)


POOL_ROWS = {"KV cache tokens", "GPU blocks", "max concurrency", "KV cache memory"}


@pytest.mark.parametrize("case", cases_with("pool"))
def test_token_pool_from_printed_memory(case):
    """Tokens, blocks and concurrency come out within one block of the printed figures, given the printed memory."""
    comparison = comparison_for(case)
    rows = [row for row in comparison.rows if row.figure in POOL_ROWS]
    assert rows, "the case has no pool figure to compare"
    for row in rows:
        if row.figure in case.get("mismatch", []):
            assert not row.within_tolerance, f"{row.figure}: the engine's figure now follows the rule"
        else:
            assert row.within_tolerance, f"{row.figure}: printed {row.printed}, predicted {row.predicted}"


@pytest.mark.parametrize("case", cases_with("budget"))
def test_available_memory_within_five_percent(case):
    """The available KV memory predicted from printed weights and settings is within 5% of the printed one."""
    (row,) = [row for row in comparison_for(case).rows if row.figure == "available KV memory"]
    if row.figure in case.get("mismatch", []):
        assert not row.within_tolerance
    else:
        assert row.within_tolerance, f"printed {row.printed:.2f} GiB, predicted {row.predicted:.2f} GiB"


@pytest.mark.parametrize("case", cases_with("cpu_blocks"))
def test_vllm_v0_cpu_swap_blocks(case):
    """vLLM V0's CPU pool, floor(4 GiB / block bytes), matches exactly: it pins the bytes per token."""
    facts = facts_for(case)
    settings = replace(settings_from_log(facts), kv_cache_memory_bytes=GiB)
    result = estimate_engine(model_for(case), gpu_for(case), settings)
    assert result.num_cpu_blocks == case["printed"]["cpu_blocks"]


@pytest.mark.parametrize("case", cases_with("round_trip"))
def test_blocks_only_cases_round_trip(case):
    """Given the memory the printed blocks or tokens occupy, kvsize gives back the printed figures."""
    facts = facts_for(case)
    model, gpu = model_for(case), gpu_for(case)
    settings = settings_from_log(facts)
    probe = estimate_engine(model, gpu, replace(settings, kv_cache_memory_bytes=GiB))
    block_bytes = probe.kv_bytes_per_token_per_gpu * probe.block_size
    printed_blocks = facts.gpu_blocks or facts.kv_cache_tokens // probe.block_size
    result = estimate_engine(model, gpu, replace(settings, kv_cache_memory_bytes=printed_blocks * block_bytes))
    assert result.num_gpu_blocks == printed_blocks
    if facts.kv_cache_tokens is not None:
        assert result.kv_cache_tokens == facts.kv_cache_tokens
    if facts.max_concurrency is not None:
        assert round(result.max_concurrency, 2) == float(facts.max_concurrency)


def test_round_trip_bytes_per_token():
    """The blocks-only cases use the per-token sizes worked from each config.json."""
    # log-03, log-07, log-09: Llama 2 7B, 32 layers x 32 heads x 128 x 2 x 2 B = 524,288 B.
    # log-04, log-05: OPT-125m, 12 x 12 x 64 x 2 x 2 B = 36,864 B.
    # log-08: Phi-3-vision, 32 x 32 x 96 x 2 x 2 B = 393,216 B.
    # log-06, log-12: Mistral 7B, 32 x 8 x 128 x 2 x 2 B = 131,072 B (V0 sizes the window layers as full).
    expected = {"log-03": 524288, "log-04": 36864, "log-05": 36864, "log-06": 131072, "log-07": 524288,
                "log-08": 393216, "log-09": 524288, "log-12": 131072}  # fmt: skip
    for case in CASES:
        if case["id"] not in expected:
            continue
        settings = replace(settings_from_log(facts_for(case)), kv_cache_memory_bytes=GiB)
        result = estimate_engine(model_for(case), gpu_for(case), settings)
        assert result.kv_bytes_per_token_per_gpu == expected[case["id"]], case["id"]


@pytest.mark.parametrize("case", cases_with("needed"))
def test_vllm_memory_check_figures(case):
    """vLLM's "KV cache is needed" figure and its estimated max length follow the per-stage rule, or its bug."""
    facts = facts_for(case)
    model, gpu = model_for(case), gpu_for(case)
    settings = settings_from_log(facts)
    needed = parse_size(case["printed"]["needed_kv_memory"])
    available = facts.available_kv_memory
    printed_length = case["printed"]["estimated_max_model_len"]
    if "needed" in case.get("mismatch", []):
        # The bug: every layer counted on every pipeline stage, as with one stage.
        correct = needed_bytes_for_one_request(model, gpu, settings)
        assert abs(correct - needed.bytes) > needed.half_step_bytes
        settings = replace(settings, pipeline_parallel_size=1)
    predicted = needed_bytes_for_one_request(model, gpu, settings)
    assert abs(predicted - needed.bytes) <= needed.half_step_bytes
    low = estimate_max_model_len(model, gpu, settings, available.bytes - available.half_step_bytes)
    high = estimate_max_model_len(model, gpu, settings, available.bytes + available.half_step_bytes)
    assert low - 16 <= printed_length <= high + 16


def test_pipeline_bug_cases_are_per_stage_fractions():
    """kvsize's per-stage figure for log-18 is half the all-layer figure vLLM printed."""
    (case,) = [case for case in CASES if case["id"] == "log-18"]
    model, gpu = model_for(case), gpu_for(case)
    settings = settings_from_log(facts_for(case))
    # 262,144 tokens x 24 layers x 4 heads x 256 x 2 B = 12 GiB per stage; vLLM printed 24.0 GiB.
    assert needed_bytes_for_one_request(model, gpu, settings) == 12 * GiB


@pytest.mark.parametrize("case", cases_with("kv_size"))
def test_printed_cache_size_from_tokens(case):
    """The cache size an engine printed follows from its printed token count."""
    facts = facts_for(case)
    model, gpu = model_for(case), gpu_for(case)
    settings = settings_from_log(facts)
    tokens = facts.kv_cache_tokens
    if case["engine"] == "sglang" and "k_size" in case["printed"]:
        # SGLang prints K and V separately; each is half of tokens x cell size.
        printed = parse_size(case["printed"]["k_size"])
        cell = estimate_engine(model, gpu, replace(settings, kv_cache_memory_bytes=GiB)).kv_bytes_per_token_per_gpu
        predicted = tokens * cell // 2
        tolerance = printed.half_step_bytes
    elif case["engine"] == "sglang":
        printed = parse_size(case["printed"]["kv_size"])
        predicted = kv_size_bytes(model, settings, tokens)
        tolerance = printed.half_step_bytes
    elif case["engine"] == "trtllm":
        printed = parse_size(case["printed"]["kv_size"])
        result = estimate_engine(model, gpu, replace(settings, kv_cache_memory_bytes=printed.bytes))
        assert result.kv_cache_tokens == tokens
        predicted = tokens * result.kv_bytes_per_token_per_gpu
        tolerance = 0
    else:
        printed = parse_size(case["printed"]["kv_size"])
        result = estimate_engine(model, gpu, settings)
        assert result.kv_cache_tokens == tokens
        predicted = result.kv_cache_memory_bytes
        tolerance = printed.half_step_bytes
    assert abs(predicted - printed.bytes) <= tolerance, f"printed {printed.bytes / GiB:.3f} GiB, predicted {predicted / GiB:.3f} GiB"


def test_deepseek_v32_indexer_share():
    """With its 132-byte indexer keys, log-37's pool is 65.49 GiB, the figure the pull request's author gave."""
    from kvsize.engines.sglang import mla_cell_bytes
    from kvsize.precision import parse_precision

    layer = load_model("deepseek-v3.2").layers[0]
    budgeted, stored = mla_cell_bytes(layer, parse_precision("fp8_e4m3"))
    # Stored latent: 512 fp8 + 4 fp32 scales + 64 bf16 RoPE values = 656 B; budgeted: 576 + 132 B.
    assert stored == 656
    assert budgeted == 576 + 132
    indexer = budgeted - (layer.kv_lora_rank + layer.qk_rope_head_dim)
    # (1,462,784 + 64) x 61 x (656 + 132) B = 70,316,177,664 B = 65.49 GiB.
    assert round((1462784 + 64) * 61 * (stored + indexer) / GiB, 2) == 65.49


def test_v0_printed_tokens_need_less_than_printed_memory():
    """log-02: the 81,536 printed tokens fill only 7.46 GiB, so another rank set the limit."""
    (case,) = [case for case in CASES if case["id"] == "log-02"]
    comparison = comparison_for(case)
    # 48 layers x 8 / 2 heads x 128 x 2 x 2 B = 98,304 B per token per rank.
    assert comparison.pool_estimate.kv_bytes_per_token_per_gpu == 98304
    # 81,536 x 98,304 B = 8,015,314,944 B = 7.46 GiB, below the printed 8.69 GiB.
    assert round(81536 * comparison.pool_estimate.kv_bytes_per_token_per_gpu / GiB, 2) == 7.46
    (row,) = [row for row in comparison.rows if row.figure == "KV cache tokens"]
    # 8.69 GiB / (16 x 98,304 B) = 5932 blocks = 94,912 tokens.
    assert row.predicted == 94912


def test_llamacpp_sliding_cells_gemma3():
    """log-48: Gemma 3 12B's window layers keep 1024 + 512 cells at a 2048-token context."""
    (case,) = [case for case in CASES if case["id"] == "log-48"]
    result = estimate_engine(model_for(case), gpu_for(case), settings_from_log(facts_for(case)))
    assert result.sliding_window_tokens == 1536
    assert result.kv_cache_memory_bytes == 608 * MiB


def test_trtllm_unrounded_token_count():
    """log-43: TensorRT-LLM 0.5 printed 10,718 tokens, which whole 16-token blocks cannot give."""
    (case,) = [case for case in CASES if case["id"] == "log-43"]
    settings = settings_from_log(facts_for(case))
    result = estimate_engine(model_for(case), gpu_for(case), replace(settings, kv_cache_memory_bytes=10718 * 524288))
    assert result.kv_cache_tokens == 10704  # 669 whole blocks of 16
    assert 10718 % 16 != 0


def test_hybrid_state_model_lines_disagree():
    """As in log-36, a model with Gated DeltaNet layers reports far fewer tokens than concurrency x max_model_len."""
    from kvsize.engines import EngineSettings

    model = load_model("qwen3-next-80b-a3b")
    settings = EngineSettings(engine="vllm", context_tokens=32768, kv_cache_memory_bytes=20 * GiB)
    result = estimate_engine(model, load_gpu("h100-sxm"), settings)
    assert result.max_concurrency * 32768 > 2 * result.kv_cache_tokens


def test_every_case_is_checked():
    """Every transcribed case takes part in at least one test above."""
    known = {"pool", "budget", "cpu_blocks", "round_trip", "needed", "kv_size", "unrounded", "hybrid_disagreement"}
    assert len(CASES) == 48
    for case in CASES:
        assert set(case["checks"]) <= known, case["id"]
        assert case["checks"], case["id"]


def test_sglang_memory_without_gpu_is_restated():
    """log-39 names no GPU: its available memory follows from its printed free-memory lines, so it is not judged."""
    (case,) = [case for case in CASES if case["id"] == "log-39"]
    (row,) = [row for row in comparison_for(case).rows if row.figure == "available KV memory"]
    assert row.kind == "restated"
    assert row.within_tolerance is None
    # 37.97 - 44.11 x 0.8 = 2.682 GiB printed; 44.11 x 0.2 - 6.13 = 2.692 GiB restated.
    assert round(row.printed, 3) == 2.682
    assert round(row.predicted, 3) == 2.692
