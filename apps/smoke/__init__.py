"""Runtime smoke job: a replicated service loses a replica and recovers (``python -m apps.smoke.main``)."""
