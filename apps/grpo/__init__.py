"""GRPO (async and sync) on forge's actors: ``python -m apps.grpo.main --config apps/grpo/<cfg>.yaml``."""
