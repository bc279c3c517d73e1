"""The RunPod client (the real `runpod` SDK) against the stand-in: escaping, retries, GPU choice, cleanup."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from finetune_mcp.config import Settings
from finetune_mcp.errors import BackendError, ConfigError
from finetune_mcp.jobs.backends.runpod.api import RunPodAPI, RunPodSettings, TransientAPIError
from finetune_mcp.jobs.backends.runpod.backend import RunPodBackend
from finetune_mcp.jobs.store import JobState
from standins.runpod_api import RunPodStandIn

from .runpod_support import FAST_SETTINGS

HOSTILE = {
    "BREAKOUT": '"}) { id } } mutation { podTerminate(input: {podId: "x"}) } #',
    "ESCAPES": 'back\\slash \\" quote\nnew line\ttab\r\x07bell',
    "UNICODE": "ünïcødé ✓ \u2028 \U0001f680",
    "SHELL": "$(rm -rf /) `id` '; echo pwned; '",
}


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPodStandIn]:
    with RunPodStandIn(tmp_path / "runpod") as rp:
        monkeypatch.setenv("RUNPOD_API_BASE_URL", rp.url)
        yield rp


def api_for(rp: RunPodStandIn, **settings: object) -> RunPodAPI:
    values = {"api_timeout_s": 3.0, "api_retries": 2, "backoff_s": 0.05, "proxy_url": rp.proxy_url, **settings}
    return RunPodAPI(rp.api_key, RunPodSettings(**values))  # type: ignore[arg-type]


def test_hostile_values_arrive_exactly_and_inject_nothing(standin: RunPodStandIn) -> None:
    standin.faults.never_ready = True  # only the GraphQL matters here
    api = api_for(standin, image='repo/image:tag"}, evil: "1', install_command=HOSTILE["BREAKOUT"])
    pod = api.create_pod(name="finetune-mcp-ft-0123456789ab", gpu_type_id="NVIDIA A40", env=HOSTILE)
    assert not standin.ops("syntax-error")
    [deploy] = standin.ops("podFindAndDeployOnDemand")
    sent = deploy["args"]["input"]
    assert {e["key"]: e["value"] for e in sent["env"]} == HOSTILE
    assert sent["imageName"] == 'repo/image:tag"}, evil: "1'
    assert sent["dockerArgs"] == "bash -c 'eval \"$FINETUNE_MCP_BOOTSTRAP\"'"
    assert sent["ports"] == "8000/http" and sent["cloudType"] == "ALL" and "evil" not in sent
    assert [c["op"] for c in standin.calls].count("podTerminate") == 0  # the injected mutation never ran
    api.terminate(pod["id"])
    assert standin.terminated() == {pod["id"]}


@pytest.mark.parametrize(("env", "message"), [
    ({"BAD-NAME": "x"}, "not a shell identifier"),
    ({"OK": "a\x00b"}, "NUL"),
    ({"OK": "x" * 20_000}, "keep it under"),
])
def test_unsafe_values_are_refused_before_any_call(standin: RunPodStandIn, env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        api_for(standin).create_pod(name="finetune-mcp-ft-0123456789ab", gpu_type_id="NVIDIA A40", env=env)
    assert not standin.ops("podFindAndDeployOnDemand")


def test_5xx_is_retried_with_backoff_then_succeeds(standin: RunPodStandIn) -> None:
    standin.faults.errors["gpuTypes"] = [502, 503]
    types = api_for(standin).gpu_types()
    assert {t["id"] for t in types} >= {"NVIDIA A40", "NVIDIA A100 80GB PCIe"}
    assert len(standin.ops("gpuTypes")) == 3


def test_persistent_5xx_fails_clearly(standin: RunPodStandIn) -> None:
    standin.faults.errors["gpuTypes"] = [500] * 10
    with pytest.raises(TransientAPIError, match=r"could not list GPU types after 3 attempt\(s\): RunPod answered "
                                                r"with a non-JSON page \(a 5xx error\)"):
        api_for(standin).gpu_types()
    assert len(standin.ops("gpuTypes")) == 3


def test_timeouts_are_retried_then_fail_clearly(standin: RunPodStandIn) -> None:
    standin.faults.delays["myself.pods"] = [1.5]
    started = time.monotonic()
    assert api_for(standin, api_timeout_s=0.5).pods_named("nobody") == []
    assert len(standin.ops("myself.pods")) == 2 and time.monotonic() - started < 3
    standin.faults.delays["myself.pods"] = [1.5, 1.5, 1.5]
    with pytest.raises(TransientAPIError, match=r"list pods after 3 attempt\(s\): no answer within 0.5 s"):
        api_for(standin, api_timeout_s=0.5).pods_named("nobody")


def test_wrong_key_is_refused_without_echoing_it(standin: RunPodStandIn) -> None:
    wrong = "rpa_WRONGKEYdoNotEcho0123456789"
    with pytest.raises(BackendError, match="rejected the API key") as err:
        RunPodAPI(wrong, RunPodSettings()).gpu_types()
    assert wrong not in str(err.value) and wrong not in repr(RunPodAPI(wrong, RunPodSettings()))


def test_cheapest_available_gpu_with_enough_memory(standin: RunPodStandIn) -> None:
    api = api_for(standin)
    assert [c.display_name for c in api.choose_gpu(30)] == ["RTX A6000", "A40", "A100 PCIe"]  # H100: no stock
    assert api.choose_gpu(30)[0].price_per_hr == 0.33
    assert [c.display_name for c in api.choose_gpu(60)] == ["A100 PCIe"]
    assert api.choose_gpu(100) == []
    assert [c.display_name for c in api_for(standin, cloud_type="SECURE").choose_gpu(30)][:2] == ["A40", "RTX A6000"]
    assert [c.display_name for c in api_for(standin, max_price_per_hr=0.34).choose_gpu(30)] == ["RTX A6000"]
    [forced] = api_for(standin, gpu_type="NVIDIA GeForce RTX 4090").choose_gpu(30)
    assert forced.id == "NVIDIA GeForce RTX 4090" and forced.memory_gb == 24


async def test_a_create_that_timed_out_but_happened_is_cleaned_up(standin: RunPodStandIn, tmp_path: Path) -> None:
    """The first create stalls past the deadline yet makes a pod; the retry makes a second one. Both
    carry the job's name, and finalize terminates every pod with that name."""
    standin.faults.never_ready = True
    standin.faults.delays["podFindAndDeployOnDemand"] = [1.5]
    backend = RunPodBackend(Settings(home=tmp_path, runpod_api_key=standin.api_key),
                            runpod=RunPodSettings(api_timeout_s=0.5, api_retries=3, backoff_s=0.05))
    name = "finetune-mcp-ft-0123456789ab"
    [choice] = backend.api().choose_gpu(70)
    pod, _ = backend._create(backend.api(), name, [choice], {"A": "b"})
    standin.wait_for(lambda: len(standin.pods) == 2, timeout=10, what="the stalled create to finish")
    handle = {"job_id": "ft-0123456789ab", "run_dir": str(tmp_path / "run"), "pod_name": name, "pod_id": pod["id"],
              "nonce": "00", "started": False, "created_at": time.time(), "price_per_hr": choice.price_per_hr}
    await backend.finalize(handle, JobState.FAILED)
    assert standin.terminated() == set(standin.pods) and not standin.running_pods()


def test_an_unattended_worker_terminates_its_own_pod(standin: RunPodStandIn) -> None:
    """The last line of defence: nobody talks to the worker, so it ends its pod with the pod-scoped key."""
    api = api_for(standin)
    pod = api.create_pod(name="finetune-mcp-ft-00000000beef", gpu_type_id="NVIDIA A40", env={
        "FINETUNE_MCP_WORKER_TOKEN": "t" * 32, "FINETUNE_MCP_WORKER_IDLE_TIMEOUT_S": "1",
        "FINETUNE_MCP_BOOTSTRAP": f"{FAST_SETTINGS['FINETUNE_MCP_RUNPOD_INSTALL']} && exec finetune-mcp worker serve",
    })
    standin.wait_for(lambda: pod["id"] in standin.terminated(), timeout=30, what="the pod to terminate itself")
    [call] = standin.ops("podTerminate")
    assert call["args"]["input"]["podId"] == pod["id"]
    log = standin.pods[pod["id"]].workdir / "container.log"
    standin.wait_for(lambda: f"terminated pod {pod['id']}" in log.read_text(), timeout=5, what="the worker's log line")
    assert 'installed "finetune-mcp"' in log.read_text()
