"""forge's applications: ``python -m apps.grpo.main``, ``python -m apps.sft.main`` and the ``make demo`` entry."""
