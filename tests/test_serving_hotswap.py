"""Moving the champion alias under load: real uvicorn on 127.0.0.1, zero failed requests."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from serving_fixtures import API_DIGEST, AUTH, running_server, trained_registry, wait_ready

from serving.settings import Settings

pytestmark = pytest.mark.slow  # end-to-end: real servers, subprocesses or training


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with trained_registry(tmp_path_factory.getbasetemp()) as trained:
        yield trained


def _second_version(first: str) -> str:
    """Register the champion's model again as a new version (a real registry version)."""
    from mlflow import MlflowClient

    from training.registry import register

    source = MlflowClient().get_model_version("churnlens", first)
    return register(source.source, run_id=source.run_id)


def test_alias_move_swaps_the_model_without_failing_a_request(registry):
    from features.io import read_dataset
    from serving.app import create_app
    from training.registry import promote

    settings = Settings(data=registry.data, api_keys=[API_DIGEST], model_poll_seconds=0.2,
                        outreach_enabled=False)
    dataset = read_dataset(registry.data).dataset
    customer_ids = list(dataset.orders["customer_id"].unique()[:20])
    outcomes: list[list[tuple[int, str | None]]] = [[], []]
    stop = threading.Event()

    with running_server(create_app(settings)) as base_url:
        with httpx.Client(base_url=base_url, timeout=30) as probe:
            assert wait_ready(probe)["model_version"] == registry.version

        def hammer(results: list[tuple[int, str | None]]) -> None:
            with httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as client:
                i = 0
                while not stop.is_set():
                    customer_id = customer_ids[i % len(customer_ids)]
                    i += 1
                    try:
                        answer = client.get(f"/v1/customers/{customer_id}/score")
                        version = answer.json().get("model_version")
                        results.append((answer.status_code, version))
                    except httpx.HTTPError as error:
                        results.append((0, repr(error)))

        threads = [threading.Thread(target=hammer, args=(r,)) for r in outcomes]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.5)
            new_version = _second_version(registry.version)
            promote(new_version, reason="hot swap test")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if any(r and r[-1][1] == new_version for r in outcomes):
                    break
                time.sleep(0.05)
            time.sleep(0.5)  # keep requests going after the swap
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
            promote(registry.version, reason="restore the shared test champion")
        with httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as client:
            served = client.get("/v1/model").json()["version"]
            metrics = client.get("/metrics").text

    everything = [outcome for results in outcomes for outcome in results]
    failures = [outcome for outcome in everything if outcome[0] != 200]
    assert not failures, f"{len(failures)} of {len(everything)} requests failed: {failures[:5]}"
    assert served == new_version, "the server should serve the new champion after the swap"
    for results in outcomes:
        versions = [version for _, version in results]
        assert versions[0] == registry.version, "requests before the move use the old champion"
        assert versions[-1] == new_version, "requests after the swap use the new champion"
        switch = versions.index(new_version)
        assert set(versions[switch:]) == {new_version}, "no request goes back to the old model"
    assert "churnlens_model_swaps_total 1.0" in metrics
