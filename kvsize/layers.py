"""Layer kinds and what each one caches per sequence.

Each kind computes, for one decoder layer on one tensor-parallel rank: how many
tokens of a sequence of `context_tokens` it keeps, how many bits that many
cached tokens take (`cache_bits`), and what one token costs on average
(`bits_per_token`). Kinds with a fixed state per sequence (Mamba, Gated
DeltaNet) keep no tokens and report their state size instead. Bits may be a
Fraction when outliers are counted at their expected number.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from kvsize.precision import Precision, parse_precision

Bits = int | Fraction


def kv_heads_per_rank(num_kv_heads: int, tensor_parallel_size: int) -> int:
    """Return the KV heads one tensor-parallel rank stores.

    Heads are split evenly across ranks. When there are more ranks than heads,
    each head is replicated so that every rank stores one, which is what vLLM,
    SGLang and TensorRT-LLM do.
    """
    return max(1, num_kv_heads // tensor_parallel_size)


@dataclass(frozen=True)
class FullAttention:
    """Standard attention (MHA, GQA, MQA): K and V for every token of the sequence.

    K and V are two separate vectors per head, which is the factor of 2 in the
    usual formula; their sizes may differ (`k_head_dim`, `v_head_dim`).
    """

    num_kv_heads: int
    k_head_dim: int
    v_head_dim: int
    kind = "full"
    grows_with_context = True

    def bits_per_token(self, precision: Precision, tensor_parallel_size: int = 1) -> Bits:
        heads = kv_heads_per_rank(self.num_kv_heads, tensor_parallel_size)
        per_head = precision.amortized_bits(self.k_head_dim) + precision.amortized_bits(self.v_head_dim)
        return heads * per_head + 2 * precision.row_bits(1)

    def cache_bits(self, precision: Precision, num_tokens: int, tensor_parallel_size: int = 1) -> Bits:
        """Return the exact bits `num_tokens` cached tokens take: K and V for each head on this rank."""
        heads = kv_heads_per_rank(self.num_kv_heads, tensor_parallel_size)
        keys = precision.tokens_bits(self.k_head_dim, num_tokens)
        values = precision.tokens_bits(self.v_head_dim, num_tokens)
        return heads * (keys + values) + 2 * precision.row_bits(num_tokens)

    def cached_tokens(self, context_tokens: int) -> int:
        return context_tokens

    def max_cached_tokens(self) -> int | None:
        """Return the most tokens the layer ever keeps, or None when unbounded."""
        return None

    def state_bits(self, tensor_parallel_size: int = 1) -> int:
        return 0


@dataclass(frozen=True)
class SlidingWindowAttention(FullAttention):
    """Attention over the last `sliding_window` tokens only (Mistral 7B v0.1, Gemma 2/3, gpt-oss).

    Older tokens can never be attended to again, so the layer keeps at most
    the window.
    """

    sliding_window: int
    kind = "sliding"
    grows_with_context = False

    def cached_tokens(self, context_tokens: int) -> int:
        return min(context_tokens, self.sliding_window)

    def max_cached_tokens(self) -> int | None:
        return self.sliding_window


@dataclass(frozen=True)
class ChunkedLocalAttention(FullAttention):
    """Attention within fixed chunks of `attention_chunk_size` tokens (Llama 4).

    A token attends only to earlier tokens of its own chunk, so the layer never
    needs more than one chunk of KV for a sequence.
    """

    attention_chunk_size: int
    kind = "chunked"
    grows_with_context = False

    def cached_tokens(self, context_tokens: int) -> int:
        return min(context_tokens, self.attention_chunk_size)

    def max_cached_tokens(self) -> int | None:
        return self.attention_chunk_size


@dataclass(frozen=True)
class LatentAttention:
    """Multi-head latent attention (DeepSeek V2/V3, Kimi K2).

    The cache stores one compressed latent of `kv_lora_rank` elements plus the
    decoupled RoPE key of `qk_rope_head_dim` elements per token; K and V are
    both rebuilt from it, so there is no factor of 2 and no dependence on the
    head count. Tensor parallelism does not split the latent: every rank keeps
    a full copy. DeepSeek sparse attention (V3.2) adds an indexer key of
    `indexer_head_dim` elements per token.
    """

    kv_lora_rank: int
    qk_rope_head_dim: int
    indexer_head_dim: int = 0
    kind = "mla"
    grows_with_context = True

    def bits_per_token(self, precision: Precision, tensor_parallel_size: int = 1) -> Bits:
        bits = precision.amortized_bits(self.kv_lora_rank + self.qk_rope_head_dim) + precision.row_bits(1)
        if self.indexer_head_dim:
            bits += precision.amortized_bits(self.indexer_head_dim)
        return bits

    def cache_bits(self, precision: Precision, num_tokens: int, tensor_parallel_size: int = 1) -> Bits:
        """Return the exact bits `num_tokens` cached latents take (the same on every rank)."""
        bits = precision.tokens_bits(self.kv_lora_rank + self.qk_rope_head_dim, num_tokens)
        bits += precision.row_bits(num_tokens)
        if self.indexer_head_dim:
            bits += precision.tokens_bits(self.indexer_head_dim, num_tokens)
        return bits

    def cached_tokens(self, context_tokens: int) -> int:
        return context_tokens

    def max_cached_tokens(self) -> int | None:
        return None

    def state_bits(self, tensor_parallel_size: int = 1) -> int:
        return 0


@dataclass(frozen=True)
class RecurrentState:
    """A fixed-size state per sequence instead of a KV cache (Mamba, Gated DeltaNet).

    `state_elements` sums every state tensor of the layer (convolution and
    SSM or recurrent state). The state keeps its own dtype, independent of the
    KV-cache dtype. Tensor parallelism splits it across ranks by heads, so each
    rank stores `ceil(state_elements / tp)` elements.
    """

    state_elements: int
    state_dtype: str = "bf16"
    kind = "state"
    grows_with_context = False

    def bits_per_token(self, precision: Precision, tensor_parallel_size: int = 1) -> Bits:
        return 0

    def cache_bits(self, precision: Precision, num_tokens: int, tensor_parallel_size: int = 1) -> Bits:
        return 0

    def cached_tokens(self, context_tokens: int) -> int:
        return 0

    def max_cached_tokens(self) -> int | None:
        return 0

    def state_bits(self, tensor_parallel_size: int = 1) -> int:
        elements = -(-self.state_elements // tensor_parallel_size)
        return parse_precision(self.state_dtype, option="state_dtype").vector_bits(elements)


@dataclass(frozen=True)
class SharedKV:
    """A layer that reads the cache of an earlier layer and stores nothing itself.

    Gemma 3n's last `num_kv_shared_layers` layers and Cross-Layer Attention
    work this way. `reuses` names the layer type whose cache is read.
    """

    reuses: str
    kind = "shared"
    grows_with_context = False

    def bits_per_token(self, precision: Precision, tensor_parallel_size: int = 1) -> Bits:
        return 0

    def cache_bits(self, precision: Precision, num_tokens: int, tensor_parallel_size: int = 1) -> Bits:
        return 0

    def cached_tokens(self, context_tokens: int) -> int:
        return 0

    def max_cached_tokens(self) -> int | None:
        return 0

    def state_bits(self, tensor_parallel_size: int = 1) -> int:
        return 0


Layer = FullAttention | LatentAttention | RecurrentState | SharedKV

LAYER_KINDS = ("full", "sliding", "chunked", "mla", "state", "shared")
