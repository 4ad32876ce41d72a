"""Suite-wide fixtures."""

import os
import shutil
import tempfile

import pytest


@pytest.fixture(scope="module", autouse=True)
def _isolated_weight_store():
    """Each test module gets its own weight-store folder, so no module sees policy versions another one pushed
    (a generator catches up to the newest stored version when it starts). Module scope, not function scope:
    engines started by module-scoped fixtures keep the folder they were spawned with."""
    old = os.environ.get("FORGE_STORE_DIR")
    root = tempfile.mkdtemp(prefix="forge-store-test-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.environ["FORGE_STORE_DIR"] = root
    yield root
    if old is None:
        os.environ.pop("FORGE_STORE_DIR", None)
    else:
        os.environ["FORGE_STORE_DIR"] = old
    shutil.rmtree(root, ignore_errors=True)
