"""Scale-out on a real two-node Ray cluster on loopback (ray start --head + one ray start --address)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Ray reads these when it is imported, so the driver (this process) gets them before the import: its
# own temp dir and auth token, so a stale local Ray session on this machine cannot interfere.
NODE_IP = "127.0.0.2"  # loopback: the cluster never listens beyond this machine
RAY_SETTINGS = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": tempfile.mkdtemp(prefix="rsray-", dir="/tmp"),
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RANKSTACK_RAY_NODE_IP": NODE_IP}
os.environ.update(RAY_SETTINGS)
pytest.importorskip("ray", reason="the ray extra is not installed")
pytest.importorskip("sentence_transformers", reason="the dense extra is not installed")

from rankstack.index import Index, build_index  # noqa: E402
from rankstack.io import read_run  # noqa: E402
from rankstack.types import Doc  # noqa: E402
from tests.unit.test_cli import invoke  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((NODE_IP, 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def ray_cluster():
    settings = RAY_SETTINGS
    env = {**os.environ, **settings}
    port = _free_port()
    address = f"{NODE_IP}:{port}"
    common = ["--node-ip-address", NODE_IP, "--num-cpus", "1", "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", "--port", str(port), "--include-dashboard=false", *common],
                       env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([RAY, "start", "--address", address, *common], env=env, check=True, capture_output=True,
                       timeout=120)
        yield address, settings
    finally:  # also when a test (or the start itself) fails
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(settings["RAY_TMPDIR"], ignore_errors=True)


@pytest.fixture
def cluster(ray_cluster, monkeypatch: pytest.MonkeyPatch) -> str:
    address, settings = ray_cluster
    for name, value in settings.items():  # the driver (this process) joins with the same settings
        monkeypatch.setenv(name, value)
    return address


def test_eval_on_ray_gives_the_same_runs(cluster: str, tiny_beir: Path, tmp_path: Path, monkeypatch,
                                         capsys) -> None:
    pipelines = ["bm25", "dense(precision=fp32)", "bm25%3>>dense(precision=fp32)", "rrf(bm25,dense(precision=fp32))"]
    outputs = {}
    for mode, extra in (("local", []), ("ray", ["--ray", cluster, "--ray-workers", "2"])):
        args = ["eval", str(tiny_beir), "--index", str(tmp_path / f"index-{mode}"), "--save-runs",
                str(tmp_path / mode), "-m", "nDCG@10", "--json", *extra]
        for pipeline in pipelines:
            args += ["-p", pipeline]
        code, _, err = invoke(args, monkeypatch, capsys)
        assert code == 0, err
        outputs[mode] = [read_run(tmp_path / mode / f"system-{i}.run") for i in range(len(pipelines))]
    for single, distributed in zip(outputs["local"], outputs["ray"], strict=True):
        assert sorted(single.query_ids) == sorted(distributed.query_ids)
        for query_id in single.query_ids:
            assert [h.doc_id for h in single[query_id]] == [h.doc_id for h in distributed[query_id]]
            assert np.allclose(single[query_id].scores, distributed[query_id].scores, atol=1e-5)


def test_a_worker_killed_mid_encode_still_gives_a_complete_identical_index(cluster: str, tmp_path: Path) -> None:
    from rankstack.distributed.ray_backend import RayShardEncoder, ray_session
    from rankstack.index.dense import build_dense, remote_shard_encoding
    from rankstack.models.encoder import load_encoder

    docs = [Doc(f"d{i}", f"document {i} about topic {i % 7} with words {' '.join(['w'] * (i % 13))}")
            for i in range(48)]
    encoder = load_encoder("default", "fp32")
    reference = Index.open(build_index(docs, tmp_path / "reference"))
    build_dense(reference, encoder)
    reference.reload_manifest()
    expected = reference.dense_vectors(encoder.model_id, "fp32").vectors

    index = Index.open(build_index(docs, tmp_path / "distributed"))
    killed: list[int] = []
    with ray_session(cluster):
        pool = RayShardEncoder(encoder.config(), workers=2)
        pids = pool.worker_pids()
        assert len(set(pids)) == 2

        def kill_one_worker_after_the_first_shard(_: int) -> None:
            if not killed:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])

        with remote_shard_encoding(lambda config: pool):
            build_dense(index, encoder, shard_size=4, progress=kill_one_worker_after_the_first_shard)
    assert killed
    index.reload_manifest()
    vectors = index.dense_vectors(encoder.model_id, "fp32").vectors
    assert vectors.shape == expected.shape == (48, 384)
    assert np.allclose(vectors, expected, atol=1e-5)


def test_token_vectors_encoded_on_ray_equal_the_single_process_ones(cluster: str, tiny_beir: Path, tmp_path: Path,
                                                                   monkeypatch, capsys) -> None:
    from rankstack.index.token_vectors import stored_token_vectors
    from rankstack.models.late_interaction import build_late_interaction_model, load_late_interaction
    from tests.component._late_interaction import tiny_bert

    model = build_late_interaction_model(str(tiny_bert(tmp_path / "bert")), dimension=16, query_tokens=16,
                                         document_tokens=64)
    model.save(str(tmp_path / "colbert"))
    colbert = str(tmp_path / "colbert")
    stored = {}
    for mode, extra in (("local", []), ("ray", ["--ray", cluster, "--ray-workers", "2"])):
        code, _, err = invoke(["index", str(tiny_beir), "-o", str(tmp_path / mode), "--late-interaction", colbert,
                               *extra], monkeypatch, capsys)
        assert code == 0, err
        assert ("running on Ray" in err) == (mode == "ray")
        opened = Index.open(tmp_path / mode)
        stored[mode] = stored_token_vectors(opened.segment, load_late_interaction(colbert).model_id)
    local, distributed = stored["local"], stored["ray"]
    assert local is not None and distributed is not None
    assert np.array_equal(local.offsets, distributed.offsets) and local.num_rows == distributed.num_rows > 0
    assert np.allclose(local.decode(0, int(local.offsets[-1])), distributed.decode(0, int(distributed.offsets[-1])),
                       atol=2e-2)  # int8 codes: one quantisation step at most


def test_without_ray_the_error_names_the_extra(tiny_index: Index, tiny_beir: Path, tmp_path: Path, monkeypatch,
                                                capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the package were not installed
    code, _, err = invoke(["run", str(tiny_index.path), "-q", str(tiny_beir / "queries.jsonl"), "-o",
                           str(tmp_path / "x.run"), "--ray", "local"], monkeypatch, capsys)
    assert code == 3
    assert "pip install 'rankstack[ray]'" in err and "Traceback" not in err
