"""``POST /v1/guard`` on a collector app with the real tiny detoxify model and embedded ClickHouse."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import generate_latest

from veil_collector.api.routes.guard import GuardResponse
from veil_collector.app import create_app
from veil_collector.auth import create_project
from veil_collector.config import Settings
from veil_collector.guard.decisions import DecisionLog
from veil_collector.guard.scoring import ScoreItem, Scorer, TextScores
from veil_collector.guard.service import GuardService

_VOCABULARY = "the you are idiot nice day hello world good bad stupid love hate people thanks help"
WORDS = _VOCABULARY.split()


class RecordingScorer(Scorer):
    """The real scorer, remembering how many texts each batch held (and optionally held at a gate)."""

    def __init__(self, toxicity: Any) -> None:
        super().__init__(toxicity)
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def score(self, items: Sequence[ScoreItem]) -> list[TextScores]:
        self.entered.set()
        self.gate.wait(10)
        self.batch_sizes.append(len(items))
        return super().score(items)


def build_app(settings: Settings, store: Any, service: GuardService) -> FastAPI:
    """The collector app (which mounts the guard router), its state set as the lifespan would."""
    app = create_app(settings)
    app.state.store = store
    app.state.guard = service
    return app


@pytest.fixture
def settings(chdb_dsn: str, store: Any, tmp_path: Path) -> Settings:
    return Settings(
        clickhouse_dsn=chdb_dsn, database=store.database, data_dir=tmp_path, pii_ner_enabled=False
    )


@pytest.fixture
def scorer(toxicity: Any) -> RecordingScorer:
    return RecordingScorer(toxicity)


@pytest.fixture
def service(scorer: RecordingScorer, store: Any) -> Iterator[GuardService]:
    # A 20 ms window: long enough that 64 callers started together always share batches.
    svc = GuardService(scorer, decisions=DecisionLog(store, flush_interval_s=60), window_s=0.02)
    yield svc
    svc.close()


@pytest.fixture
def key(store: Any) -> str:
    return create_project(store, "guard")[1]


def client_for(app: FastAPI, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://collector", headers=headers
    )


def test_64_concurrent_callers_are_batched_and_each_gets_its_own_scores(
    settings: Settings, store: Any, service: GuardService, scorer: RecordingScorer, key: str, toxicity: Any
) -> None:
    app = build_app(settings, store, service)
    texts = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(1 + i % 9)) for i in range(64)]

    async def run() -> list[httpx.Response]:
        async with client_for(app, key) as client:
            return await asyncio.gather(
                *(client.post("/v1/guard", json={"texts": [t], "checks": ["toxicity"]}) for t in texts)
            )

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses), responses[0].text
    alone = Scorer(toxicity).score([ScoreItem(t, False) for t in texts])
    for text_scores, response in zip(alone, responses, strict=True):
        (result,) = response.json()["results"]
        assert result["checks"][0]["check"] == "toxicity"
        assert result["checks"][0]["score"] == pytest.approx(text_scores.toxicity, abs=1e-5)
    # Distinct texts have distinct random-model scores, so a mix-up could not go unnoticed.
    assert len({round(s.toxicity, 6) for s in alone}) > 32
    assert sum(scorer.batch_sizes) == 64 and max(scorer.batch_sizes) > 1


def test_decisions_follow_thresholds_and_on_fail_and_are_stored(
    settings: Settings, store: Any, service: GuardService, key: str
) -> None:
    app = build_app(settings, store, service)
    body = {
        "texts": ["hello world", "you are stupid"],
        "checks": ["toxicity", "bias"],
        "target": "output",
        "thresholds": {"toxicity": 0.0, "bias": 1.0},
        "labels": True,
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
    }

    async def run() -> httpx.Response:
        async with client_for(app, key) as client:
            return await client.post("/v1/guard", json=body)

    response = asyncio.run(run())
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"].startswith("detoxify-")
    for result in answer["results"]:
        toxicity, bias = result["checks"]
        assert (toxicity["check"], toxicity["decision"]) == ("toxicity", "block")  # threshold 0
        assert bias["check"] == "bias" and bias["decision"] == ("block" if bias["score"] >= 1.0 else "pass")
        assert result["passed"] is False
        assert "toxicity" in result["labels"]

    service._decisions.flush()  # the log writes on its interval; the test does not wait for it
    rows = store.query(
        "SELECT ProjectId, TraceId, Target, Check, Decision, Source FROM guard_decisions ORDER BY Check"
    ).result_rows
    project = rows[0][0]
    assert project != "" and all(r[0] == project for r in rows)
    assert sorted((r[3], r[4]) for r in rows) == [
        ("bias", "pass"), ("bias", "pass"), ("toxicity", "block"), ("toxicity", "block")
    ]  # fmt: skip
    assert {(r[1], r[2], r[5]) for r in rows} == {("0af7651916cd43dd8448eb211c80319c", "output", "collector")}


def test_the_answer_is_the_documented_guard_response(
    settings: Settings, store: Any, service: GuardService, key: str
) -> None:
    # The route encodes its answer itself, so nothing else checks it against GuardResponse.
    app = build_app(settings, store, service)
    with_labels = {"texts": ["hello", "you idiot"], "checks": ["toxicity", "bias"], "labels": True}

    async def run() -> tuple[httpx.Response, httpx.Response, dict[str, Any]]:
        async with client_for(app, key) as client:
            return (
                await client.post("/v1/guard", json=with_labels),
                await client.post("/v1/guard", json={"texts": ["hello"]}),
                (await client.get("/openapi.json")).json(),
            )

    labelled, plain, spec = asyncio.run(run())
    for response in (labelled, plain):
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert GuardResponse.model_validate_json(response.content).model_dump() == response.json()
    assert [len(r["checks"]) for r in labelled.json()["results"]] == [2, 2]
    assert all(r["labels"]["toxicity"] >= 0 for r in labelled.json()["results"])
    assert plain.json()["results"][0]["labels"] is None
    operation = spec["paths"]["/v1/guard"]["post"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/GuardResponse"}
    assert {"401", "422", "503"} <= set(operation["responses"]) and operation["security"]


def test_a_nan_score_is_a_server_error_not_invalid_json(settings: Settings, store: Any, key: str) -> None:
    class NanClassifier:
        name, version, labels, identity_labels = "nan", "0", ("toxicity",), ()

        def predict(self, texts: Sequence[str]) -> list[dict[str, float]]:
            return [{"toxicity": float("nan")} for _ in texts]

    service = GuardService(Scorer(NanClassifier()), window_s=0)
    app = build_app(settings, store, service)

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://c", headers=headers) as client:
            return await client.post("/v1/guard", json={"texts": ["hello"]})

    try:
        assert asyncio.run(run()).status_code == 500
    finally:
        service.close()


def test_flag_and_no_record(settings: Settings, store: Any, service: GuardService, key: str) -> None:
    app = build_app(settings, store, service)
    body = {"texts": ["hello"], "thresholds": {"toxicity": 0.0}, "on_fail": "flag", "record": False}

    async def run() -> httpx.Response:
        async with client_for(app, key) as client:
            return await client.post("/v1/guard", json=body)

    response = asyncio.run(run())
    assert response.json()["results"][0]["checks"][0]["decision"] == "flag"
    assert service._decisions.flush() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"texts": []}, "texts"),
        ({"texts": ["a"], "checks": ["pii"]}, "checks"),
        ({"texts": ["a"], "thresholds": {"toxicity": 2}}, "thresholds"),
        ({"texts": ["a"], "extra": 1}, "extra"),
        ({"texts": ["a"], "trace_id": "xyz"}, "trace_id"),
        ({"texts": ["x" * 600_000, "y" * 600_000]}, "characters in all"),
    ],
)
def test_bad_input_is_a_422_naming_the_problem(
    settings: Settings, store: Any, service: GuardService, key: str, body: dict[str, Any], field: str
) -> None:
    app = build_app(settings, store, service)

    async def run() -> httpx.Response:
        async with client_for(app, key) as client:
            return await client.post("/v1/guard", json=body)

    response = asyncio.run(run())
    assert response.status_code == 422
    assert field in response.text


def test_unknown_key_is_a_401(settings: Settings, store: Any, service: GuardService) -> None:
    app = build_app(settings, store, service)

    async def run() -> tuple[httpx.Response, httpx.Response]:
        async with client_for(app, None) as anonymous, client_for(app, "vk_nope") as wrong:
            body = {"texts": ["hello"]}
            return await anonymous.post("/v1/guard", json=body), await wrong.post("/v1/guard", json=body)

    missing, unknown = asyncio.run(run())
    assert missing.status_code == 401 and "Authorization" in missing.json()["detail"]
    assert unknown.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"


def test_a_full_queue_is_a_503_with_retry_after(
    settings: Settings, store: Any, toxicity: Any, key: str
) -> None:
    scorer = RecordingScorer(toxicity)
    scorer.gate.clear()
    service = GuardService(scorer, max_queue=1, window_s=0)
    app = build_app(settings, store, service)

    async def run() -> list[httpx.Response]:
        async with client_for(app, key) as client:
            body = {"texts": ["hello"]}
            running = asyncio.create_task(client.post("/v1/guard", json=body))
            await asyncio.to_thread(scorer.entered.wait, 10)
            queued = asyncio.create_task(client.post("/v1/guard", json=body))
            while service._batcher._queue.qsize() < 1:
                await asyncio.sleep(0.005)
            refused = await client.post("/v1/guard", json=body)
            scorer.gate.set()
            return [await running, await queued, refused]

    try:
        running, queued, refused = asyncio.run(run())
    finally:
        scorer.gate.set()
        service.close()
    assert running.status_code == 200 and queued.status_code == 200
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"


def test_guard_latency_and_decisions_are_on_metrics(
    settings: Settings, store: Any, service: GuardService, key: str
) -> None:
    app = build_app(settings, store, service)
    blocked = 'veil_guard_decisions_total{check="toxicity",decision="block"}'

    def sample(metrics: str, name: str) -> float:
        return float(next(line for line in metrics.splitlines() if line.startswith(name)).split()[-1])

    async def run() -> str:
        async with client_for(app, key) as client:
            await client.post("/v1/guard", json={"texts": ["hello"], "thresholds": {"toxicity": 0.0}})
            return (await client.get("/metrics")).text

    before = sample(generate_latest().decode(), blocked)
    metrics = asyncio.run(run())
    assert sample(metrics, "veil_guard_request_seconds_count") >= 1
    assert "veil_guard_batch_texts_bucket" in metrics
    assert sample(metrics, blocked) == before + 1
    # Every (check, decision) series is exported from the start, at 0 until it happens.
    assert 'veil_guard_decisions_total{check="bias",decision="flag"}' in metrics


def test_the_service_is_built_from_the_settings_on_first_use(
    chdb_dsn: str, store: Any, tmp_path: Path, models_dir: Path, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    settings = Settings(
        clickhouse_dsn=chdb_dsn,
        database=store.database,
        data_dir=tmp_path,
        pii_ner_enabled=False,
        models_dir=models_dir,
        classifier_device="cpu",
    )
    app = create_app(settings)
    app.state.store = store

    async def run() -> httpx.Response:
        async with client_for(app, key) as client:
            return await client.post("/v1/guard", json={"texts": ["hello"]})

    try:
        response = asyncio.run(run())
        assert response.status_code == 200, response.text
        assert response.json()["model"].startswith("detoxify-original")
        assert isinstance(app.state.guard, GuardService)
    finally:
        built = getattr(app.state, "guard", None)
        if built is not None:
            built.close()
