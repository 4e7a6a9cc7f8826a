"""Moving the champion alias under load: real uvicorn on 127.0.0.1, zero failed requests."""

from __future__ import annotations

import itertools
import threading

import httpx
import pytest

from serving.settings import Settings

pytestmark = pytest.mark.slow  # end-to-end: real servers, subprocesses or training


@pytest.fixture(scope="module")
def registry(tmp_path_factory, trained_registry):
    with trained_registry.active() as trained:
        yield trained


def _second_version(first: str) -> str:
    """Register the champion's model again as a new version (a real registry version)."""
    from mlflow import MlflowClient

    from training.registry import register

    source = MlflowClient().get_model_version("churnlens", first)
    return register(source.source, run_id=source.run_id)


def test_alias_move_swaps_the_model_without_failing_a_request(registry, manual_polls, api_key,
                                                              running_server):
    """Requests keep going while the registry poll swaps the model; none fails or goes back.

    The server polls the registry only when the test says so (``manual_polls``), and
    each client thread makes requests before and after the swap, counted, not timed.
    """
    from features.io import read_dataset
    from serving.app import create_app
    from training.registry import promote

    settings = Settings(data=registry.data, api_keys=[api_key.digest], model_poll_seconds=30,
                        outreach_enabled=False)
    dataset = read_dataset(registry.data).dataset
    customer_ids = list(dataset.orders["customer_id"].unique()[:20])
    outcomes: list[list[tuple[int, str | None]]] = [[], []]
    warmed = [threading.Event() for _ in outcomes]  # 20 requests done before the move
    finished = [threading.Event() for _ in outcomes]  # 20 requests done after the swap
    swapped = threading.Event()
    app = create_app(settings, pause=manual_polls.pause)

    with running_server(app) as base_url:
        assert app.state.holder.current().version == registry.version
        manual_polls.wait_paused()  # the start-up load is done; the next poll is ours

        def hammer(results: list[tuple[int, str | None]], warm: threading.Event,
                   done: threading.Event) -> None:
            after = 0
            with httpx.Client(base_url=base_url, headers=api_key.auth, timeout=60) as client:
                for i in itertools.count():
                    seen_swap = swapped.is_set()  # read before the request is sent
                    customer_id = customer_ids[i % len(customer_ids)]
                    try:
                        answer = client.get(f"/v1/customers/{customer_id}/score")
                        results.append((answer.status_code, answer.json().get("model_version")))
                    except httpx.HTTPError as error:
                        results.append((0, repr(error)))
                    if i + 1 >= 20:
                        warm.set()
                    after += seen_swap
                    if after >= 20:
                        done.set()
                        return

        threads = [threading.Thread(target=hammer, args=args, daemon=True)
                   for args in zip(outcomes, warmed, finished, strict=True)]
        for thread in threads:
            thread.start()
        try:
            assert all(event.wait(120) for event in warmed), "clients never got going"
            new_version = _second_version(registry.version)
            promote(new_version, reason="hot swap test")
            manual_polls.poll()  # one registry poll: it sees the moved alias and swaps
            swapped.set()
            assert all(event.wait(120) for event in finished), "clients stopped after the swap"
        finally:
            swapped.set()
            for thread in threads:
                thread.join(120)
            promote(registry.version, reason="restore the shared test champion")
        with httpx.Client(base_url=base_url, headers=api_key.auth, timeout=60) as client:
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
