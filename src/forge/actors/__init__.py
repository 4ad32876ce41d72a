"""Thin Monarch actor shells over forge's engines: one endpoint = one line into an engine.

Import the actor you need from its module (``forge.actors.generator.Generator``, ``forge.actors.trainer.TitanTrainer``,
...); this package does not import them eagerly, so importing one actor does not start loading the others' engines.
"""
