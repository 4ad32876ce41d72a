"""Plain-PyTorch / vLLM engines under the actors: testable in one process without Monarch."""
