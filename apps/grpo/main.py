"""GRPO on forge's actors, asynchronous or synchronous: ``python -m apps.grpo.main [--config cfg.yaml] [k=v ...]``.

Reads like the seeds' pseudo-code (docs: concepts.md, "Writing RL Algorithms"): ``generate_episode`` samples a
group of responses to one prompt and scores it; N ``continuous_rollouts`` tasks feed the replay buffer while
``continuous_training`` trains on batches of whole groups, pushes the new weights to the store and fans the update
out to the generators. ``sync`` mode composes the same ``generate_episode`` on-policy: collect a batch, then train.

Departures from the textbook (Shao et al. 2024, arXiv:2402.03300):
  * async mode trains on groups sampled up to ``grpo.max_policy_age`` versions ago; the loss's importance ratio is
    taken against the generator's own log-probs (the behaviour policy), whose clip bounds the off-policy update;
  * dynamic sampling (DAPO §3.2, arXiv:2503.14476) drops groups whose rewards are all equal (no gradient);
  * the loss is chosen by name (``trainer.loss.name``: grpo, dr_grpo, dapo, cispo, gspo, sapo).

With no arguments it runs the CPU demo config, ``apps/grpo/demo_arith_cpu.yaml``. ``--resume [RUN_DIR]``
continues a run from its last checkpoint (trainer, buffer, data position, versions); Ctrl-C checkpoints and stops.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apps.common import GracefulStop, first, parse_args
from apps.grpo.config import GRPOConfig
from apps.grpo.session import Evaluator, RunSession, TaskReward
from forge.actors.dataset import DatasetActor
from forge.actors.generator import Generator
from forge.actors.reference_model import ReferenceModel
from forge.actors.replay_buffer import ReplayBuffer
from forge.actors.reward import RewardActor
from forge.actors.trainer import TitanTrainer
from forge.controller.actor import ForgeActor
from forge.envs.grpo import tool_episode_group
from forge.observability import Timer, record_metric, timed
from forge.rl.advantages import compute_advantages
from forge.rl.batch import collate_episodes
from forge.rl.replay import ReplayBufferConfig
from forge.types import Episode

DEFAULT_CONFIG = str(Path(__file__).with_name("demo_arith_cpu.yaml"))


@dataclass
class Services:
    """The actors of one GRPO run (the nouns of the loop)."""

    dataloader: Any  # DatasetActor: training prompts, sample()
    policy: Any  # Generator service: generate / update_weights
    reward: Any  # RewardActor: evaluate_response
    replay_buffer: Any  # ReplayBuffer: add / sample whole groups
    trainer: Any  # TitanTrainer: train_step / push_weights / save / load
    ref_model: Any | None  # ReferenceModel for the KL penalty, or None
    pad_id: int  # the tokenizer's padding id (collate_episodes pads with it)
    tokenizer: Any = None  # the policy's tokenizer (multi-turn rollouts render environment turns with it)


async def generate_episode(svc: Services, cfg: GRPOConfig, seed: int | None) -> int:
    """Sample one prompt, G responses to it, score them, compute group advantages, add the group to the buffer."""
    sample = await svc.dataloader.sample.call_one()
    sampling = {"seed": seed} if seed is not None else None
    if cfg.env is not None:  # multi-turn tool episodes: the environment scores them, tool tokens are masked
        with timed("generate"):
            episodes = await tool_episode_group(sample, svc.policy.generate.route, svc.tokenizer,
                                                cfg.grpo.group_size, cfg.env)
        rewards = [ep.reward for ep in episodes]
    else:
        with timed("generate"):
            completions = await svc.policy.generate.route(sample.prompt, sampling_params=sampling)
        rewards = await asyncio.gather(*[
            svc.reward.evaluate_response.call_one(prompt=sample.prompt, response=c.text, target=sample.target,
                                                  metadata=sample.metadata) for c in completions])
        group_id = uuid.uuid4().hex[:12]
        episodes = [Episode(prompt_ids=c.prompt_ids, response_ids=c.token_ids, reward=float(r),
                            generator_logprobs=c.logprobs, policy_version=c.generator_version, group_id=group_id)
                    for c, r in zip(completions, rewards)]
    compute_advantages(episodes, cfg.grpo.advantage)
    if svc.ref_model is not None:
        ref = first(await svc.ref_model.forward.call(collate_episodes(episodes, svc.pad_id)))
        for i, ep in enumerate(episodes):
            start = len(ep.prompt_ids) - 1
            ep.ref_logprobs = ref[i, start:start + ep.response_len].tolist()
    for r in rewards:
        record_metric("reward/mean", float(r), "mean")
    record_metric("generator/response_len", sum(ep.response_len for ep in episodes) / len(episodes))
    await svc.replay_buffer.add.call_one(episodes)
    return len(episodes)


class RolloutQuota:
    """Bounds how far async generation runs ahead of training: at most ``ahead`` batches of groups beyond what
    training has consumed (or the buffer dropped), so compute is not spent on groups that would only go stale."""

    def __init__(self, groups_per_step: int, ahead: int) -> None:
        self.started, self.allowed = 0, groups_per_step * ahead
        self.cond = asyncio.Condition()

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait for room to start one group; False once the run is stopping."""
        async with self.cond:
            await self.cond.wait_for(lambda: self.started < self.allowed or stop.is_set())
            self.started += 1
            return not stop.is_set()

    async def release(self, groups: int) -> None:
        """``groups`` more groups were consumed by training or dropped by the buffer."""
        async with self.cond:
            self.allowed += groups
            self.cond.notify_all()


async def continuous_rollouts(svc: Services, cfg: GRPOConfig, quota: RolloutQuota, stop: asyncio.Event) -> None:
    """Generate groups continuously with whatever policy version the generators currently serve."""
    while await quota.acquire(stop):
        await generate_episode(svc, cfg, seed=None)


async def train_on(svc: Services, session: RunSession, episodes: list[Episode]) -> dict[str, float]:
    """One optimizer step on a batch of episodes, then push the weights and fan them out to the generators."""
    timer = Timer()
    batch = collate_episodes(episodes, svc.pad_id)
    with timer.section("train"):
        metrics = first(await svc.trainer.train_step.call(batch))
    version = session.version + 1
    with timer.section("weight_sync"):
        await svc.trainer.push_weights.call(version)
        await svc.policy.update_weights.fanout(version)
    session.version = version
    return {**metrics, **timer.lap()}


async def continuous_training(svc: Services, session: RunSession, quota: RolloutQuota,
                              stop: asyncio.Event) -> None:
    """Train on batches of whole groups as they become available (async GRPO)."""
    while not session.done and not stop.is_set():
        shards = await svc.replay_buffer.sample.call_one(curr_policy_version=session.version)
        if shards is None:
            await asyncio.sleep(0.02)  # wait for more experience
            continue
        metrics = await train_on(svc, session, [ep for shard in shards for ep in shard])
        await quota.release(await session.end_step(metrics))
    stop.set()
    await quota.release(0)  # wake rollouts waiting for room so they see the stop


async def synchronous_rl(svc: Services, session: RunSession, stop: asyncio.Event) -> None:
    """On-policy GRPO: collect a full batch with the current weights, then train on exactly that batch."""
    cfg = session.cfg
    while not session.done and not stop.is_set():
        shards, rounds = None, 0
        while shards is None and not stop.is_set():
            seeds = [cfg.run.seed * 1_000_003 + session.step * 10_007 + rounds * 1_009 + i
                     for i in range(cfg.grpo.prompts_per_step)]
            await asyncio.gather(*[generate_episode(svc, cfg, seed) for seed in seeds])
            shards = await svc.replay_buffer.sample.call_one(curr_policy_version=session.version)
            rounds += 1
        if shards is not None:
            await session.end_step(await train_on(svc, session, [ep for s in shards for ep in s]))
    stop.set()


async def launch(cfg: GRPOConfig, session: RunSession) -> Services:
    """Start every actor of the run (placement comes from the config sections)."""
    g, t = cfg.generator, cfg.trainer
    sampling = {**g.sampling_params, "n": cfg.grpo.group_size, "temperature": cfg.grpo.temperature,
                "max_tokens": cfg.grpo.max_tokens}
    buffer_cfg = ReplayBufferConfig(batch_size=cfg.grpo.batch_size, max_policy_age=cfg.grpo.max_policy_age,
                                    dynamic_sampling=cfg.grpo.dynamic_sampling, group_size=cfg.grpo.group_size,
                                    seed=cfg.run.seed)
    engine_args = {"seed": cfg.run.seed, **g.engine_args, "model": session.model_path}
    ref = None
    policy, trainer, dataloader, reward, replay_buffer = await asyncio.gather(
        Generator.options(procs=g.procs, num_replicas=g.num_replicas, with_gpus=g.with_gpus).as_service(
            engine_args=engine_args, sampling_params=sampling, backend=g.backend,
            initial_version=session.version, weight_load=g.weight_load),
        TitanTrainer.options(procs=t.procs, with_gpus=t.with_gpus).as_actor(session.trainer_config()),
        DatasetActor.options(procs=1).as_actor(session.dataset_config()),
        RewardActor.options(procs=1).as_actor(grader=TaskReward()),
        ReplayBuffer.options(procs=1).as_actor(buffer_cfg),
    )
    if cfg.ref_model is not None:
        r = cfg.ref_model
        ref = await ReferenceModel.options(procs=r.procs, with_gpus=r.with_gpus).as_actor(
            model={"path": session.model_path}, param_dtype=r.param_dtype, temperature=cfg.grpo.temperature)
    return Services(dataloader, policy, reward, replay_buffer, trainer, ref, session.pad_id, session.tokenizer)


async def shutdown(svc: Services) -> None:
    """Stop every actor (and the vLLM engine processes under the generator)."""
    for actor in (svc.policy, svc.trainer, svc.dataloader, svc.reward, svc.replay_buffer, svc.ref_model):
        if actor is not None:
            try:
                await ForgeActor.shutdown(actor)
            except Exception as e:  # keep stopping the others; say what failed
                print(f"[forge] shutting down {actor!r} failed: {e}", flush=True)


async def main(cfg: GRPOConfig, resume: str | None = None) -> dict[str, Any]:
    """Run GRPO as configured; returns the summary written to ``<run>/summary.json``."""
    session = await RunSession.start(cfg, resume)
    stop = GracefulStop().install()
    try:
        svc = await launch(cfg, session)
    except BaseException:
        session.close()  # the store and logger; actors already up stop with this process
        raise
    try:
        await session.restore(svc)
        evaluator = Evaluator(cfg, svc.policy)
        await session.evaluate_before(evaluator)
        session.evaluator = evaluator
        session.services = svc
        if cfg.grpo.mode == "async":
            quota = RolloutQuota(cfg.grpo.prompts_per_step, ahead=cfg.grpo.max_policy_age + 1)
            rollouts = [asyncio.create_task(continuous_rollouts(svc, cfg, quota, stop.event))
                        for _ in range(cfg.grpo.num_rollout_loops)]
            training = asyncio.create_task(continuous_training(svc, session, quota, stop.event))
            await asyncio.gather(training, *rollouts)
        else:
            await synchronous_rl(svc, session, stop.event)
        return await session.finish(svc, interrupted=stop.requested)
    finally:
        await shutdown(svc)
        session.close()


if __name__ == "__main__":
    config, resume_dir = parse_args(GRPOConfig, None, DEFAULT_CONFIG)
    asyncio.run(main(config, resume_dir))
