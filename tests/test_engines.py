"""Engine profiles on hand-checked cases: blocks, groups, windows, formats, parallelism and budgets."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from conftest import make_model

from kvsize.catalog import load_gpu, load_model
from kvsize.engines import EngineSettings, estimate_engine, parse_engine_name
from kvsize.engines.common import (
    DRIVER_RESERVED_BYTES,
    NON_TORCH_BYTES_SINGLE_GPU,
    activation_peak_bytes,
    parse_version,
    pipeline_stage_sizes,
)
from kvsize.engines.llamacpp import parse_cache_type
from kvsize.engines.vllm import default_block_size, mla_bytes_per_token, needed_bytes_for_one_request
from kvsize.errors import InvalidInputError
from kvsize.precision import parse_precision
from kvsize.units import GiB, MiB

H100 = "h100-sxm"


def run(model, engine: str, gpu: str = H100, **settings):
    spec = load_model(model) if isinstance(model, str) else model
    return estimate_engine(spec, load_gpu(gpu), EngineSettings(engine=engine, **settings))


# ---------------------------------------------------------------------------
# vLLM


def test_vllm_uniform_pool_blocks_and_tokens():
    """A full-attention model: blocks = memory // (16 x bytes per token), tokens = blocks x 16."""
    # Llama 3.1 8B: 131,072 B per token; 10 GiB / (16 x 131,072 B) = 5120 blocks = 81,920 tokens.
    result = run("llama3.1-8b", "vllm", context_tokens=8192, kv_cache_memory_bytes=10 * GiB)
    assert result.kv_bytes_per_token_per_gpu == 131072
    assert result.num_gpu_blocks == 5120
    assert result.kv_cache_tokens == 81920
    # 5120 blocks / (8192 / 16 = 512 blocks per request) = 10.0.
    assert result.max_concurrency == 10.0


def test_vllm_sliding_window_group_and_concurrency():
    """gpt-oss-120b: two 18-layer groups; the window group needs cdiv(127 + 2048, 16) + 1 blocks."""
    # TP 4: 8 heads / 4 = 2 per rank; 2 x 64 x 2 x 2 B = 512 B per layer-token; page 16 x 512 = 8192 B.
    # 10 GiB / 8192 B / 18 layers = 72,817 blocks; tokens 72,817 // 2 x 16 = 582,528.
    # Per request: 16,384 / 16 = 1024 blocks + (136 + 1) = 1161; 72,817 / 1161 = 62.719...
    result = run("gpt-oss-120b", "vllm", gpu="a100-80gb", context_tokens=16384, tensor_parallel_size=4,
                 engine_version="0.10.1", kv_cache_memory_bytes=10 * GiB)  # fmt: skip
    assert result.num_gpu_blocks == 72817
    assert result.kv_cache_tokens == 582528
    assert result.max_concurrency == pytest.approx(72817 / 1161)
    assert result.sliding_window_tokens == 136 * 16


def test_vllm_before_hybrid_allocator_sizes_windows_as_full():
    """vLLM V1 before 0.10 put every layer in one group: concurrency = tokens / max_model_len."""
    result = run("gpt-oss-120b", "vllm", gpu="a100-80gb", context_tokens=16384, tensor_parallel_size=4,
                 engine_version="0.9.2", kv_cache_memory_bytes=10 * GiB)  # fmt: skip
    # 36 layers x 512 B = 18,432 B per token; 10 GiB / (16 x 18,432 B) = 36,408 blocks.
    assert result.num_gpu_blocks == 36408
    assert result.max_concurrency == pytest.approx(36408 * 16 / 16384)


def test_vllm_groups_pad_uneven_layer_counts():
    """Gemma 3 1B: 22 window and 4 full layers make 6 + 1 groups of 4 layers, with 2 padding slots."""
    # 1 KV head x 256 x 2 x 2 B = 1024 B per layer-token; page 16 KiB; 1 GiB / 16 KiB / 4 = 16,384 blocks.
    result = run("gemma3-1b", "vllm", context_tokens=32768, kv_cache_memory_bytes=GiB)
    assert result.num_gpu_blocks == 16384
    # Token line: 16,384 // 7 groups x 16 = 37,440.
    assert result.kv_cache_tokens == 16384 // 7 * 16
    # Per request: 2048 full blocks + 6 window groups x (cdiv(511 + 8192, 16) + 1 = 545) = 5318.
    assert result.max_concurrency == pytest.approx(16384 / (2048 + 6 * 545))


def test_vllm_chunked_local_layers():
    """Chunked-local layers keep min(chunk + batched tokens, max_model_len) tokens, with no extra block."""
    model = make_model("""
        num_layers: 4
        layer_types:
          local: {kind: chunked, num_kv_heads: 8, head_dim: 128, attention_chunk_size: 8192}
          full: {kind: full, num_kv_heads: 8, head_dim: 128}
        layer_pattern: [local, local, local, full]
    """)
    result = run(model, "vllm", context_tokens=65536, max_num_batched_tokens=8192, kv_cache_memory_bytes=GiB)
    # 3 local + 1 full: min 1, max 3 >= 1.5 x 1, so groups of 1 layer: 3 local groups + 1 full.
    # Per request: full 65,536 / 16 = 4096; local cdiv(8192 + 8192, 16) = 1024 each.
    assert result.max_concurrency == pytest.approx(result.num_gpu_blocks / (4096 + 3 * 1024))


def test_vllm_hybrid_mamba_block_size():
    """Qwen3-Next: the attention block grows to 544 tokens so one page holds a Gated DeltaNet state."""
    # State per layer: 548,864 elements x 2 B = 1,097,728 B; attention 2 heads x 256 x 2 x 2 B = 2048 B per token.
    # 16 x cdiv(1,097,728, 16 x 2048) = 16 x 34 = 544 tokens, vLLM's "attention block size 544".
    result = run("qwen3-next-80b-a3b", "vllm", context_tokens=32768, kv_cache_memory_bytes=20 * GiB)
    assert result.block_size == 544
    # 12 attention + 36 state layers: groups of 12, 1 attention group and 3 state groups.
    assert dict(result.details)["KV cache groups"].startswith("4 groups of 12 layers")


def test_vllm_mla_block_size_by_gpu():
    """MLA models use 64-token blocks on FlashMLA GPUs (H100) and 16 elsewhere (A100)."""
    model = load_model("deepseek-v3")
    assert default_block_size(model, load_gpu("h100-sxm")) == 64
    assert default_block_size(model, load_gpu("a100-80gb")) == 16
    assert default_block_size(load_model("llama3.1-8b"), load_gpu("h100-sxm")) == 16


def test_vllm_fp8_ds_mla_layout():
    """DeepSeek V3.2 with an fp8 cache: 656 B latent plus 132 B indexer key per layer."""
    layer = load_model("deepseek-v3.2").layers[0]
    # 512 fp8 + 512 / 128 x 4 B scales + 64 x 2 B RoPE = 656; indexer 128 + 4 = 132.
    assert mla_bytes_per_token(layer, parse_precision("fp8")) == 656 + 132
    # bf16: (512 + 64) x 2 = 1152, plus the fp8 indexer key.
    assert mla_bytes_per_token(layer, parse_precision("bf16")) == 1152 + 132
    plain = load_model("deepseek-v3").layers[0]
    assert mla_bytes_per_token(plain, parse_precision("fp8")) == 576


def test_vllm_mla_replicated_on_every_rank():
    """An MLA latent is not split by tensor parallelism: 61 x 576 x 2 B per rank at TP 8."""
    result = run("deepseek-v3", "vllm", context_tokens=8192, tensor_parallel_size=8, kv_cache_memory_bytes=GiB)
    assert result.kv_bytes_per_token_per_gpu == 61 * 576 * 2


def test_vllm_kv_heads_replicated_past_tp():
    """Qwen3-235B has 4 KV heads; at TP 8 each rank still stores one: 94 x 1 x 128 x 2 x 2 B."""
    result = run("qwen3-235b-a22b", "vllm", context_tokens=8192, tensor_parallel_size=8, kv_cache_memory_bytes=GiB)
    assert result.kv_bytes_per_token_per_gpu == 94 * 128 * 2 * 2


def test_vllm_fp8_and_nvfp4_pages():
    """fp8 halves the bf16 page; nvfp4 packs head_size / 2 + head_size / 16 bytes per head."""
    fp8 = run("llama3.1-8b", "vllm", context_tokens=4096, kv_cache_dtype="fp8", kv_cache_memory_bytes=GiB)
    assert fp8.kv_bytes_per_token_per_gpu == 65536
    nvfp4 = run("llama3.1-8b", "vllm", context_tokens=4096, kv_cache_dtype="nvfp4", kv_cache_memory_bytes=GiB)
    # 32 layers x 8 heads x 2 x (64 + 8) B = 36,864 B.
    assert nvfp4.kv_bytes_per_token_per_gpu == 36864


def test_vllm_pipeline_parallel_uses_largest_stage():
    """GLM-4.7's 92 layers on 8 stages are [11, 11, 11, 12, 12, 12, 12, 11]; the pool follows 12."""
    assert pipeline_stage_sizes(92, 8) == [11, 11, 11, 12, 12, 12, 12, 11]
    result = run("glm-4.7", "vllm", context_tokens=8192, pipeline_parallel_size=8, kv_cache_memory_bytes=GiB)
    assert result.kv_bytes_per_token_per_gpu == 12 * 8 * 128 * 2 * 2


def test_vllm_needed_bytes_for_one_request():
    """vLLM's start-up check: Llama 3.1 8B at 131,072 tokens needs 131,072 x 131,072 B = 16 GiB."""
    model, gpu = load_model("llama3.1-8b"), load_gpu(H100)
    settings = EngineSettings(engine="vllm", context_tokens=131072)
    assert needed_bytes_for_one_request(model, gpu, settings) == 16 * GiB


def test_vllm_budget_terms_sum_to_available():
    """Available KV memory = total x utilization - weights - activation - non-torch - CUDA graphs."""
    result = run("llama3.1-8b", "vllm", context_tokens=8192, gpu_memory_utilization=Decimal("0.9"))
    terms = {term.name: term for term in result.budget_terms}
    requested = terms["x gpu_memory_utilization 0.9"].bytes
    assert requested == int((85520809984 - DRIVER_RESERVED_BYTES) * Decimal("0.9"))
    taken = sum(term.bytes for term in result.budget_terms if term.sign == -1 and term.name != "driver reserve")
    assert result.kv_cache_memory_bytes == requested - taken
    assert terms["non-torch memory"].bytes == NON_TORCH_BYTES_SINGLE_GPU
    assert "CUDA graphs" in terms
    assert all(terms[name].is_estimate for name in ("activation peak", "non-torch memory", "CUDA graphs"))


def test_vllm_old_versions_skip_cuda_graph_term():
    """Before 0.21, and with --enforce-eager, no CUDA-graph memory is subtracted."""
    old = run("llama3.1-8b", "vllm", context_tokens=8192, engine_version="0.10.1")
    eager = run("llama3.1-8b", "vllm", context_tokens=8192, enforce_eager=True)
    assert "CUDA graphs" not in {term.name for term in old.budget_terms}
    assert "CUDA graphs" not in {term.name for term in eager.budget_terms}


def test_vllm_v0_cpu_blocks_and_concurrency():
    """V0: 4 GiB / (16 x 131,072 B) = 2048 CPU blocks; concurrency = tokens / max_model_len."""
    result = run("llama3.1-8b", "vllm", engine_version="v0", context_tokens=20000, kv_cache_memory_bytes=4 * GiB)
    assert result.num_cpu_blocks == 2048
    assert result.num_gpu_blocks == 2048
    assert result.max_concurrency == pytest.approx(2048 * 16 / 20000)


def test_activation_estimate_worked_example():
    """Llama 3.1 8B at 20,000 tokens and 256 sequences, as in the activation_peak_bytes docstring."""
    model = load_model("llama3.1-8b")
    # 20,000 x (3 x 14,336 + 3 x 4,096) x 2 B + 256 x 128,256 x 4 B = 2,211,840,000 + 131,334,144.
    assert activation_peak_bytes(model, 20000, 256, 1) == 2211840000 + 131334144


# ---------------------------------------------------------------------------
# SGLang


def test_sglang_budget_rule():
    """rest = free before weights x mem_fraction_static - weights; tokens = rest // cell size."""
    # Llama 3.2 3B: 28 x 8 x 128 x 2 x 2 B = 114,688 B per token.
    # 44 GiB x 0.2 - 6 GiB = 2.8 GiB = 3,006,477,107 B; // 114,688 = 26,214 tokens.
    result = run("llama3.2-3b", "sglang", context_tokens=35000, mem_fraction_static=Decimal("0.2"),
                 free_memory_before_weights_bytes=44 * GiB, weights_bytes_per_gpu=6 * GiB)  # fmt: skip
    assert result.kv_bytes_per_token_per_gpu == 114688
    assert result.kv_cache_memory_bytes == int(44 * GiB * Decimal("0.2")) - 6 * GiB
    assert result.kv_cache_tokens == result.kv_cache_memory_bytes // 114688


def test_sglang_page_size_rounds_tokens():
    """With --page-size 64 the pool is a whole number of pages."""
    result = run("llama3.2-3b", "sglang", context_tokens=8192, block_size=64, kv_cache_memory_bytes=GiB)
    # 2^30 // 114,688 = 9362 tokens -> 146 pages of 64 = 9344.
    assert result.kv_cache_tokens == 9344


def test_sglang_dp_attention_divides_attention_tp():
    """TP 8 with DP 4 attention: attention TP 2, so Llama 3.1 70B's 8 KV heads give 4 per rank."""
    result = run("llama3.1-70b", "sglang", context_tokens=8192, tensor_parallel_size=8, data_parallel_size=4,
                 enable_dp_attention=True, kv_cache_memory_bytes=GiB)  # fmt: skip
    assert result.kv_bytes_per_token_per_gpu == 80 * 4 * 128 * 2 * 2
    with pytest.raises(InvalidInputError):
        run("llama3.1-70b", "sglang", context_tokens=8192, tensor_parallel_size=8, data_parallel_size=3,
            enable_dp_attention=True, kv_cache_memory_bytes=GiB)  # fmt: skip


def test_sglang_fp4_scales():
    """SGLang FP4 MLA: half a byte per value plus one 1-byte scale per 16 values."""
    result = run("deepseek-v3", "sglang", context_tokens=8192, kv_cache_dtype="nvfp4", kv_cache_memory_bytes=GiB)
    # 576 / 2 + 576 / 16 = 288 + 36 = 324 B per layer; x 61 layers.
    assert result.kv_bytes_per_token_per_gpu == 61 * 324


def test_engine_dtype_spellings():
    """vLLM's fp8_ds_mla and SGLang's fp4_e2m1 size as fp8 and as 4 bits with a scale per 16 values."""
    ds = run("deepseek-v3.2", "vllm", context_tokens=8192, kv_cache_dtype="fp8_ds_mla", kv_cache_memory_bytes=GiB)
    assert ds.kv_bytes_per_token_per_gpu == 61 * (656 + 132)
    torch_name = run("llama3.1-8b", "sglang", context_tokens=8192, kv_cache_dtype="torch.float8_e4m3fn",
                     kv_cache_memory_bytes=GiB)  # fmt: skip
    assert torch_name.kv_bytes_per_token_per_gpu == 65536
    fp4 = run("llama3.1-8b", "sglang", context_tokens=8192, kv_cache_dtype="fp4_e2m1", kv_cache_memory_bytes=GiB)
    # 32 layers x 8 heads x 2 x (64 + 8) B = 36,864 B.
    assert fp4.kv_bytes_per_token_per_gpu == 36864


def test_sglang_hybrid_window_pools():
    """gpt-oss-20b: the full pool takes total / (F + 0.8 x S) tokens, the window pool 0.8 of that."""
    result = run("gpt-oss-20b", "sglang", context_tokens=8192, kv_cache_memory_bytes=GiB)
    # 12 full and 12 window layers of 8 x 64 x 2 x 2 = 2048 B: cell 49,152 B; 2^30 // 49,152 = 21,845.
    # 21,845 x 49,152 / (24,576 + 0.8 x 24,576) = 24,272 full tokens; window 19,417.
    assert result.kv_cache_tokens == 24272
    assert result.sliding_window_tokens == 19417


# ---------------------------------------------------------------------------
# TensorRT-LLM


def test_trtllm_fraction_of_free_memory_and_blocks():
    """KV = 0.9 x free memory; blocks of 32 tokens over every layer of the rank."""
    # 0.9 x 20 GiB = 19,327,352,832 B; Llama 2 7B block = 32 x 524,288 B = 16 MiB; 1152 blocks.
    result = run("llama2-7b", "trtllm", context_tokens=4096, free_memory_after_load_bytes=20 * GiB)
    assert result.kv_cache_memory_bytes == int(20 * GiB * Decimal("0.9"))
    assert result.num_gpu_blocks == 1152
    assert result.kv_cache_tokens == 1152 * 32
    # 1152 blocks / (4096 / 32 = 128 blocks per request) = 9.0.
    assert result.max_concurrency == 9.0


def test_trtllm_gives_no_window_discount():
    """Gemma 3 1B: all 26 layers count per token, the window layers too."""
    result = run("gemma3-1b", "trtllm", context_tokens=32768, kv_cache_memory_bytes=GiB)
    assert result.kv_bytes_per_token_per_gpu == 26 * 1024


# ---------------------------------------------------------------------------
# llama.cpp


def test_llamacpp_block_formats():
    """q8_0 stores 32 values in 34 bytes and q4_0 in 18, so a 128-element head costs 136 and 72 bytes."""
    assert parse_cache_type("q8_0").vector_bits(128) == 136 * 8
    assert parse_cache_type("q4_0").vector_bits(128) == 72 * 8
    assert parse_cache_type("f16").vector_bits(128) == 256 * 8
    with pytest.raises(InvalidInputError):
        parse_cache_type("q3_k")


def test_llamacpp_cells_padding_and_size():
    """Qwen2.5 7B at 4 x 4000 tokens: 16,000 cells padded to 16,128 (256 with flash attention)."""
    result = run("qwen2.5-7b", "llama.cpp", context_tokens=4000, batch_size=4)
    assert result.kv_cache_tokens == 16128
    # 28 x 4 x 128 x 2 x 2 B = 57,344 B per cell.
    assert result.kv_cache_memory_bytes == 16128 * 57344
    no_flash = run("qwen2.5-7b", "llama.cpp", context_tokens=4000, batch_size=4, flash_attn=False)
    assert no_flash.kv_cache_tokens == 16000


def test_llamacpp_q8_cache():
    """A q8_0 cache costs 34 / 64 of f16: 28 x 4 x 2 x 136 B = 30,464 B per cell."""
    result = run("qwen2.5-7b", "llama.cpp", context_tokens=8192, kv_cache_dtype="q8_0")
    assert result.kv_bytes_per_token_per_gpu == 30464


def test_llamacpp_swa_full_disables_window_cache():
    """--swa-full sizes the window layers like full ones."""
    model = load_model("gemma3-12b")
    gpu = load_gpu(H100)
    settings = EngineSettings(engine="llama.cpp", context_tokens=8192)
    windowed = estimate_engine(model, gpu, settings)
    full = estimate_engine(model, gpu, replace(settings, swa_full=True))
    # 48 layers x 8192 B x 8192 cells = 3 GiB; with windows 8 x 8192 + 40 x 1536 cells.
    assert full.kv_cache_memory_bytes == 3 * GiB
    assert windowed.kv_cache_memory_bytes == (8 * 8192 + 40 * 1536) * 8192
    assert windowed.kv_cache_memory_bytes < 1024 * MiB


def test_llamacpp_fit_against_given_memory():
    """With --kv-cache-memory the fit check compares the cache with that memory."""
    # Qwen2.5 7B at 32,768 cells: 32,768 x 57,344 B = 1.75 GiB.
    fits = run("qwen2.5-7b", "llama.cpp", context_tokens=32768, kv_cache_memory_bytes=2 * GiB)
    too_small = run("qwen2.5-7b", "llama.cpp", context_tokens=32768, kv_cache_memory_bytes=GiB)
    assert fits.kv_cache_memory_bytes == 32768 * 57344
    assert fits.fits is True
    assert too_small.fits is False


def test_llamacpp_rejects_tensor_parallel():
    """llama.cpp splits layers, not heads."""
    with pytest.raises(InvalidInputError):
        run("qwen2.5-7b", "llama.cpp", context_tokens=8192, tensor_parallel_size=2)


# ---------------------------------------------------------------------------
# Shared


@pytest.mark.parametrize(("text", "expected"), [
    ("0.10.1.1", (0, 10, 1, 1)),
    ("v0.6.4.post1", (0, 6, 4)),
    ("0.15.2rc1.dev93", (0, 15, 2)),
    ("nightly", None),
    (None, None),
])  # fmt: skip
def test_parse_version(text, expected):
    assert parse_version(text) == expected


def test_engine_names():
    assert parse_engine_name("TensorRT-LLM") == "trtllm"
    assert parse_engine_name("llamacpp") == "llama.cpp"
    with pytest.raises(InvalidInputError):
        parse_engine_name("tgi")


def test_invalid_fractions_are_rejected():
    with pytest.raises(InvalidInputError):
        run("llama3.1-8b", "sglang", context_tokens=8192, mem_fraction_static=Decimal("1.5"))
    with pytest.raises(InvalidInputError):
        run("llama3.1-8b", "vllm", context_tokens=8192, pipeline_parallel_size=0)


def test_engine_core_imports_neither_rich_nor_typer():
    """The engine profiles and the log reader stay pure: no Rich or Typer on their import path."""
    import json
    import subprocess
    import sys

    script = (
        "from kvsize.catalog import load_gpu, load_model\n"
        "from kvsize.engines import EngineSettings, estimate_engine\n"
        "from kvsize.engine_logs import compare_log, parse_log\n"
        "estimate_engine(load_model('gpt-oss-120b'), load_gpu('h100'), EngineSettings(engine='vllm'))\n"
        "import json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    modules = set(json.loads(completed.stdout.strip().splitlines()[-1]))
    assert "kvsize.engines.vllm" in modules
    assert not {name for name in modules if name.split(".")[0] in ("rich", "typer", "click")}


# ---------------------------------------------------------------------------
# The verdict for --batch requests, and the checks per engine


def test_vllm_verdict_counts_batch():
    """10 GiB holds 5,120 blocks; a request of 8,192 tokens takes 512, so 10 fit and 11 do not."""
    ten = run("llama3.1-8b", "vllm", context_tokens=8192, batch_size=10, kv_cache_memory_bytes=10 * GiB)
    eleven = run("llama3.1-8b", "vllm", context_tokens=8192, batch_size=11, kv_cache_memory_bytes=10 * GiB)
    assert (ten.fits, ten.max_requests) == (True, 10)
    assert (eleven.fits, eleven.max_requests) == (False, 10)
    assert eleven.fit_reason == ("no: 11 requests of 8,192 tokens need 5,632 blocks of 16 tokens; "
                                 "the pool has 5,120, enough for 10")  # fmt: skip


def test_vllm_data_parallel_ranks_share_batch():
    """DP 2: each rank's 5,120 blocks hold 10 requests; 21 requests put 11 on one rank."""
    fits = run("llama3.1-8b", "vllm", context_tokens=8192, batch_size=20, data_parallel_size=2,
               kv_cache_memory_bytes=10 * GiB)  # fmt: skip
    too_many = run("llama3.1-8b", "vllm", context_tokens=8192, batch_size=21, data_parallel_size=2,
                   kv_cache_memory_bytes=10 * GiB)  # fmt: skip
    assert (fits.fits, fits.requests_per_dp_rank, fits.max_requests) == (True, 10, 20)
    assert (too_many.fits, too_many.requests_per_dp_rank) == (False, 11)


def test_sglang_verdict_in_pages():
    """Llama 3.2 3B in 1 GiB with 64-token pages: 9,344 tokens hold two requests of 4,096."""
    two = run("llama3.2-3b", "sglang", context_tokens=4096, batch_size=2, block_size=64, kv_cache_memory_bytes=GiB)
    three = run("llama3.2-3b", "sglang", context_tokens=4096, batch_size=3, block_size=64, kv_cache_memory_bytes=GiB)
    assert (two.fits, two.max_requests) == (True, 2)
    assert three.fits is False
    assert "need 12,288 tokens; the pool has 9,344" in three.fit_reason


def test_trtllm_verdict_in_blocks():
    """0.9 x 20 GiB gives 1,152 blocks of 32 tokens; a 4,096-token request takes 128, so 9 fit."""
    nine = run("llama2-7b", "trtllm", context_tokens=4096, batch_size=9, free_memory_after_load_bytes=20 * GiB)
    ten = run("llama2-7b", "trtllm", context_tokens=4096, batch_size=10, free_memory_after_load_bytes=20 * GiB)
    assert (nine.fits, nine.max_requests) == (True, 9)
    assert ten.fits is False
    assert "need 1,280 blocks of 32 tokens; the pool has 1,152" in ten.fit_reason


def test_llamacpp_verdict_and_room():
    """Qwen2.5 7B: 32,768 cells x 57,344 B = 1.75 GiB per sequence; 4 GiB has room for 2."""
    result = run("qwen2.5-7b", "llama.cpp", context_tokens=32768, batch_size=3, kv_cache_memory_bytes=4 * GiB)
    assert result.fits is False
    assert result.max_requests == 2
    assert result.kv_budget_bytes == 4 * GiB
    assert "which has room for 2" in result.fit_reason


@pytest.mark.parametrize(("engine", "dtype"), [
    ("vllm", "int4"), ("vllm", "int8"), ("vllm", "mxfp4"), ("sglang", "int8"), ("trtllm", "int4"),
    ("llama.cpp", "fp8"), ("llama.cpp", "nvfp4"), ("llama.cpp", "int8"),
])  # fmt: skip
def test_engine_rejects_cache_dtypes_it_cannot_store(engine, dtype):
    with pytest.raises(InvalidInputError, match="invalid KV cache dtype"):
        run("llama3.1-8b", engine, context_tokens=8192, kv_cache_dtype=dtype, kv_cache_memory_bytes=GiB)


@pytest.mark.parametrize(("engine", "dtype", "bytes_per_token"), [
    # Llama 3.1 8B: 32 layers x 8 KV heads x 128 x 2 (K and V) = 65,536 values per token.
    ("vllm", "fp8_inc", 65536),
    ("sglang", "fp8_e5m2", 65536),
    ("trtllm", "int8", 65536),
    ("vllm", "bfloat16", 131072),
])  # fmt: skip
def test_engine_accepts_its_cache_dtypes(engine, dtype, bytes_per_token):
    result = run("llama3.1-8b", engine, context_tokens=8192, kv_cache_dtype=dtype, kv_cache_memory_bytes=GiB)
    assert result.kv_bytes_per_token_per_gpu == bytes_per_token


def test_engine_version_check():
    from kvsize.engines.common import check_engine_version

    for engine, version in (("vllm", "v0"), ("vllm", "0.10.1.1"), ("vllm", "0.29.1rc1.dev17+gd2d649e67"),
                            ("sglang", "0.5.2"), ("trtllm", "1.0.0rc3")):  # fmt: skip
        check_engine_version(engine, version)
    for engine, version in (("vllm", "abc"), ("vllm", "0.30.0"), ("vllm", "0.10abc"), ("sglang", "0.3.0"),
                            ("trtllm", "2.0"), ("llama.cpp", "5712")):  # fmt: skip
        with pytest.raises(InvalidInputError):
            check_engine_version(engine, version)


def test_engine_warnings():
    result = run("llama3.1-8b", "sglang", context_tokens=8192, max_model_len=262144, kv_cache_memory_bytes=100 * GiB)
    assert len(result.warnings) == 2
    assert "more than the 79.65 GiB" in result.warnings[0]
    assert "SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN" in result.warnings[1]
    assert run("llama3.1-8b", "sglang", context_tokens=8192, kv_cache_memory_bytes=GiB).warnings == ()


def test_llamacpp_max_sequences_when_it_fits():
    """1.75 GiB per sequence of 32,768 cells: 8 GiB has room for 4 even when 1 is asked for."""
    result = run("qwen2.5-7b", "llama.cpp", context_tokens=32768, batch_size=1, kv_cache_memory_bytes=8 * GiB)
    assert result.fits is True
    # 4 x 1.75 = 7 GiB fits; 5 x 1.75 = 8.75 GiB does not.
    assert result.max_requests == 4
