"""The Variable store on a real metadata DB: a record 0.1.0 kept under an unmasked key is moved to
the masked one without losing it; an unreadable record's error never suggests deleting it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys
from pydantic import SecretStr
from airflow.models.variable import Variable
from airflow_provider_tokenrefresh.errors import ConfigurationError
from airflow_provider_tokenrefresh.stores.variable import VariableTokenStore
from airflow_provider_tokenrefresh.tokens import TokenRecord

old = TokenRecord(refresh_token=SecretStr("rt-CANARY-legacy-0123456789"), generation=7, seed_fingerprint="sha256:x")
Variable.set("vendor_a_record", old.to_storage_json())
store = VariableTokenStore(legacy_keys={"vendor_a_record__token": "vendor_a_record"})
record, version = store.read("vendor_a_record__token")
out = {"legacy_generation": record.generation, "legacy_version": version}
store.write("vendor_a_record__token", record.model_copy(update={"generation": 8}), None)
again, version = store.read("vendor_a_record__token")
out |= {"new_generation": again.generation, "new_version_set": version is not None,
        "legacy_left": Variable.get("vendor_a_record", default_var=None) is not None}
Variable.set("broken__token", "gAAAAA-not-a-record")
try:
    VariableTokenStore().read("broken__token")
except ConfigurationError as exc:
    out["broken"] = str(exc)
print(json.dumps(out))
"""


def test_legacy_key_is_read_then_written_under_the_masked_key(tmp_path: Path) -> None:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True
    )
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["legacy_generation"] == 7 and out["legacy_version"] is None
    assert out["new_generation"] == 8 and out["new_version_set"]
    assert out["legacy_left"]  # never deleted by us: it may be what an older component still reads
    assert "fernet_key" in out["broken"] and "Do not delete it" in out["broken"]
    assert "gAAAAA" not in out["broken"]
