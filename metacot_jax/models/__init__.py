"""The policy-value LM and its KV-cache sampler."""

from metacot_jax.models.sampling import (Prefilled, Samples, SamplingConfig, decode, prefill,
                                         repeat, sample, sequence_logprobs)
from metacot_jax.models.transformer import (KVCache, ModelConfig, PolicyValueLM, count_params,
                                            forward, init_cache, init_params)

__all__ = [
    "KVCache", "ModelConfig", "PolicyValueLM", "Prefilled", "Samples", "SamplingConfig",
    "count_params", "decode", "forward", "init_cache", "init_params", "prefill", "repeat",
    "sample", "sequence_logprobs",
]
