"""forge: PyTorch-native RL post-training of language models."""
