"""Random manifests in the cache (a shared cache holds files anyone in the group may have
written): the manifest reader trusts none that is not kdcli's shape, `kd cache ls` and
`kd cache verify` answer with their exit codes, never a traceback, and nothing is written
outside the cache (hypothesis draws the manifests; everything runs in process)."""

from __future__ import annotations

import hashlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdcli.cli.main import main
from kdcli.store.cache import read_verified

FUZZ = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
WEIGHTS = b"weights"
DIGEST = hashlib.sha256(WEIGHTS).hexdigest()
KEY = "0123456789abcdef"
LEAVES = (
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.sampled_from(["model.pt", "../outside", "/etc/hostname", "", KEY, DIGEST])
)  # fmt: skip
FIELDS = st.sampled_from(
    ["files", "stats", "fingerprint", "made_by", "images_per_s", "dtype", "topk", "mode", "command"]
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(FIELDS | LEAVES.filter(lambda v: isinstance(v, str)), inner, max_size=4)
    ),
    max_leaves=10,
)
MANIFESTS = st.binary(max_size=256) | VALUES.map(lambda v: json.dumps(v).encode())


@FUZZ
@given(manifest=MANIFESTS)
def test_any_manifest_is_trusted_only_in_kdclis_shape(tmp_path, capsys, manifest):
    cache = tmp_path / "cache"
    entry = cache / "teachers" / f"mlp-{KEY}"
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "model.pt").write_bytes(WEIGHTS)
    (entry / "manifest.json").write_bytes(manifest)
    outside = {p for p in tmp_path.rglob("*") if cache not in p.parents}

    found = read_verified(entry, full=True)
    if found is not None:  # only what kdcli writes: its own files, named plainly
        assert set(found["files"]) <= {"model.pt"} and found["files"]
    assert main(["cache", "--cache-dir", str(cache), "ls"]) == 0
    assert main(["cache", "--cache-dir", str(cache), "verify"]) in (0, 1)
    assert {p for p in tmp_path.rglob("*") if cache not in p.parents} == outside
    capsys.readouterr()
