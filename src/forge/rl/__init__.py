"""forge.rl: the RL algorithm core in plain PyTorch (importable without Monarch).

loss/         policy-gradient losses (GRPO, Dr. GRPO, DAPO, CISPO, GSPO, SAPO) and their tensor ops
advantages    group-relative (GRPO), Dr. GRPO and leave-one-out (RLOO) advantage estimators
rewards       pure reward functions: answer extraction, math equivalence, DAPO overlong shaping
grading       graders (MathReward, FormatReward, ThinkingReward, ...) and, lazily, the RewardActor shell
replay        the replay buffer core: whole groups, staleness eviction, dynamic sampling, dp shards
batch         collate_episodes: Episodes -> RLBatch
"""
