"""Fixtures for the training-engine unit tests: tiny models and a one-process gloo group shared by the module."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from forge.models.tiny import TinyModelSpec, build_tiny_model

SPEC = TinyModelSpec(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer random Llama (GQA) + byte tokenizer, as an HF directory."""
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny_llama"), SPEC))


@pytest.fixture(scope="session")
def tiny_tied_model(tmp_path_factory) -> str:
    """A 2-layer random Qwen2 with tied input/output embeddings."""
    spec = TinyModelSpec(arch="qwen2", hidden_size=64, num_layers=2, intermediate_size=128, tie_word_embeddings=True)
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny_qwen2"), spec))


@pytest.fixture(autouse=True)
def one_process_group():
    """A world-1 gloo group owned by the test, so engines join it instead of creating (and destroying) one."""
    torch.manual_seed(0)
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()
