"""Supervised fine-tuning with forge's trainer actor: ``python -m apps.sft.main --config apps/sft/<cfg>.yaml``."""
