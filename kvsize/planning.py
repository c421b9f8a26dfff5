"""Capacity planning on top of the sizing engine: compare, plan and check.

Pure functions over specs and requests; the CLI renders their results.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from itertools import product
from typing import Iterable, Sequence

from kvsize.errors import InvalidInputError
from kvsize.precision import Precision
from kvsize.sizing import (
    Estimate,
    SizingRequest,
    check_tensor_parallel_size,
    estimate,
    valid_tensor_parallel_sizes,
)
from kvsize.specs import GpuSpec, ModelSpec
from kvsize.units import format_bytes

# Tensor-parallel sizes `plan` considers, smallest first: one node holds up to
# 8 GPUs, and 16 and 32 span two or four nodes. Sizes in between that the
# model's heads allow are tried too (see plan_sizes).
PLAN_TENSOR_PARALLEL_SIZES = (1, 2, 4, 8, 16, 32)

# A compare over the whole catalog with 3 contexts and 3 dtypes is about 16,000
# rows; ten times that is a typo and would take minutes and gigabytes.
MAX_COMPARE_ROWS = 200_000


# ---------------------------------------------------------------------------
# compare


def compare(
    models: Sequence[ModelSpec],
    gpus: Sequence[GpuSpec],
    base: SizingRequest,
    context_tokens: Sequence[int],
    batch_sizes: Sequence[int],
    kv_precisions: Sequence[Precision | None],
    weight_precisions: Sequence[Precision | None],
    tensor_parallel_sizes: Sequence[int],
    skipped: list[str] | None = None,
) -> list[Estimate]:
    """Return one estimate per combination, in the order the options were given.

    Every combination is kept, including those that do not fit, so a table of
    the result never hides a row. A combination that cannot exist, such as a
    tensor-parallel size the model's heads do not allow, has no estimate: it
    is described in `skipped` instead, and raised when nothing else is left.
    """
    combinations = (len(models) * len(gpus) * len(context_tokens) * len(batch_sizes) * len(kv_precisions)
                    * len(weight_precisions) * len(tensor_parallel_sizes))  # fmt: skip
    if combinations > MAX_COMPARE_ROWS:
        raise InvalidInputError(f"compare would size {combinations:,} combinations, more than {MAX_COMPARE_ROWS:,}; "
                                "give fewer values per option")  # fmt: skip
    rows = []
    problems = []
    for model, gpu, context, batch, kv, weights, tp in product(
        models, gpus, context_tokens, batch_sizes, kv_precisions, weight_precisions, tensor_parallel_sizes
    ):
        request = dataclasses.replace(
            base,
            context_tokens=context,
            batch_size=batch,
            kv_precision=kv,
            weight_precision=weights,
            tensor_parallel_size=tp,
        )
        try:
            check_tensor_parallel_size(model, tp)
        except InvalidInputError as error:
            problems.append(f"skipped {model.id} at TP {tp}: {error}")
            continue
        rows.append(estimate(model, gpu, request))
    if not rows and problems:
        reasons = "; ".join(problem.removeprefix("skipped ") for problem in dict.fromkeys(problems))
        raise InvalidInputError(f"no combination can be sized: {reasons}")
    if skipped is not None:
        skipped.extend(dict.fromkeys(problems))
    return rows


# ---------------------------------------------------------------------------
# plan


@dataclass(frozen=True)
class PlanOption:
    """The smallest tensor-parallel group of one GPU type for a request, or why none works."""

    gpu: GpuSpec
    fits: bool
    estimate: Estimate | None
    reason: str | None

    @property
    def num_gpus(self) -> int | None:
        return self.estimate.request.tensor_parallel_size if self.fits and self.estimate else None

    @property
    def total_memory_bytes(self) -> int | None:
        count = self.num_gpus
        return None if count is None else count * self.gpu.memory_reported_bytes


def _failure_reason(largest: Estimate) -> str:
    tp = largest.request.tensor_parallel_size
    if not largest.weights_fit:
        return (f"weights alone do not fit: {format_bytes(largest.weights_bytes_per_gpu)} per GPU at TP {tp} "
                f"exceed the usable memory minus the reserve")  # fmt: skip
    return (f"KV does not fit: {format_bytes(largest.kv_cache_bytes_per_gpu)} per GPU at TP {tp} "
            f"exceeds the KV budget of {format_bytes(largest.kv_budget_bytes_per_gpu)}")  # fmt: skip


def plan_sizes(model: ModelSpec, limit: int = PLAN_TENSOR_PARALLEL_SIZES[-1]) -> list[int]:
    """Return the tensor-parallel sizes `plan` tries for a model, smallest first.

    These are the powers of two up to `limit` that the model's heads allow,
    plus any other size up to `limit` that they allow (Phi-4's 10 KV heads
    allow 5 and 10 but not 4 or 8), so that no valid size is skipped.
    """
    return valid_tensor_parallel_sizes(model, limit)


def plan_for_gpu(model: ModelSpec, gpu: GpuSpec, request: SizingRequest,
                 sizes: Iterable[int] | None = None) -> PlanOption:  # fmt: skip
    """Find the smallest tensor-parallel size at which `request` fits on `gpu`."""
    tried = list(sizes) if sizes is not None else plan_sizes(model)
    largest: Estimate | None = None
    for size in tried:
        try:
            check_tensor_parallel_size(model, size)
        except InvalidInputError:
            continue
        result = estimate(model, gpu, dataclasses.replace(request, tensor_parallel_size=size))
        if result.fits:
            return PlanOption(gpu, True, result, None)
        largest = result
    if largest is None:
        return PlanOption(gpu, False, None, f"no tensor-parallel size in {tried} suits the model's heads")
    valid = ", ".join(map(str, tried))
    return PlanOption(gpu, False, largest, f"{_failure_reason(largest)} (tried TP {valid})")


def plan(model: ModelSpec, gpus: Sequence[GpuSpec], request: SizingRequest) -> list[PlanOption]:
    """Return one option per GPU type: fitting ones first by GPU count, then by total memory."""
    options = [plan_for_gpu(model, gpu, request) for gpu in gpus]

    def rank(option: PlanOption) -> tuple:
        if option.fits:
            return (0, option.num_gpus, option.total_memory_bytes, option.gpu.id)
        return (1, 0, 0, option.gpu.id)

    return sorted(options, key=rank)


# ---------------------------------------------------------------------------
# check


@dataclass(frozen=True)
class Thresholds:
    """Conditions a CI gate adds to "the request fits"."""

    min_batch_size: int | None = None
    min_context_tokens: int | None = None
    max_kv_fraction: float | None = None


@dataclass(frozen=True)
class CheckResult:
    """The verdict of `kvsize check`: the estimate and every failed condition."""

    estimate: Estimate
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def kv_fraction(self) -> float | None:
        """Return the share of the KV budget the request uses, or None when there is no budget."""
        budget = self.estimate.kv_budget_bytes_per_gpu
        return self.estimate.kv_cache_bytes_per_gpu / budget if budget > 0 else None


def check(result: Estimate, thresholds: Thresholds) -> CheckResult:
    """Evaluate the fit and each threshold, collecting every condition that fails, with its numbers."""
    failures = []
    if not result.weights_fit:
        failures.append(
            f"weights do not fit: {format_bytes(result.weights_bytes_per_gpu)} per GPU leave a KV budget of "
            f"{format_bytes(result.kv_budget_bytes_per_gpu)}"
        )
    elif not result.fits:
        failures.append(
            f"KV cache does not fit: {format_bytes(result.kv_cache_bytes_per_gpu)} per GPU needed, "
            f"budget {format_bytes(result.kv_budget_bytes_per_gpu)}"
        )
    if thresholds.min_batch_size is not None and result.max_batch_size < thresholds.min_batch_size:
        failures.append(f"max batch {result.max_batch_size:,} is below --min-batch {thresholds.min_batch_size:,}")
    if thresholds.min_context_tokens is not None:
        reach = result.max_context_tokens
        limit = result.model.max_position_embeddings
        if reach is not None and reach < thresholds.min_context_tokens:
            failures.append(
                f"max context {reach:,} tokens is below --min-context {thresholds.min_context_tokens:,}"
            )
        if thresholds.min_context_tokens > limit:
            failures.append(
                f"--min-context {thresholds.min_context_tokens:,} exceeds {result.model.id}'s "
                f"max_position_embeddings ({limit:,}): memory allows it, the model does not"
            )
    verdict = CheckResult(result, ())
    if thresholds.max_kv_fraction is not None and result.weights_fit:
        fraction = verdict.kv_fraction
        if fraction is None or fraction > thresholds.max_kv_fraction:
            used = "all" if fraction is None else f"{fraction:.1%}"
            failures.append(f"KV uses {used} of the KV budget, above --max-kv-fraction {thresholds.max_kv_fraction}")
    return CheckResult(result, tuple(failures))


# ---------------------------------------------------------------------------
# alternatives for a request that does not fit


def alternatives(model: ModelSpec, gpu: GpuSpec, request: SizingRequest, result: Estimate) -> list[str]:
    """Return single option changes that make a non-fitting request fit, each checked by a new estimate."""
    from kvsize.precision import parse_precision, parse_weight_precision

    found = []
    tp_option = plan_for_gpu(model, gpu, request)
    if tp_option.fits and tp_option.num_gpus != request.tensor_parallel_size:
        found.append(f"--tp {tp_option.num_gpus}")

    current_weight_bits = result.weight_precision.element_bits
    for name in ("fp8", "int4"):
        weights = parse_weight_precision(name)
        if weights.element_bits < current_weight_bits and estimate(model, gpu, dataclasses.replace(request, weight_precision=weights)).fits:
            found.append(f"--weights-dtype {name}")
            break

    if result.weights_fit:
        if result.kv_precision.element_bits > 8:
            fp8 = parse_precision("fp8")
            if estimate(model, gpu, dataclasses.replace(request, kv_precision=fp8)).fits:
                found.append("--kv-cache-dtype fp8")
        if 1 <= result.max_batch_size < request.batch_size:
            found.append(f"--batch {result.max_batch_size}")
        if result.max_context_tokens is not None and 1 <= result.max_context_tokens < request.context_tokens:
            found.append(f"--ctx {result.max_context_tokens}")
    return found
