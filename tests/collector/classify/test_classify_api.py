"""The evaluations router over HTTP on real embedded ClickHouse: listing, feedback, the bias report.

The router is mounted on a small FastAPI app; ``get_store`` serves the test's database and ``get_project``
is replaced by a header so two projects can be told apart (API-key auth is tested with the query routes).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from fastapi import FastAPI, Header
from fastapi.testclient import TestClient

from veil_collector.api.deps import get_project, get_store
from veil_collector.api.routes.evaluations import router
from veil_collector.records import Evaluation
from veil_collector.store import Store

T0 = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(hours=2)
WINDOW = {"start": (T0 - timedelta(hours=1)).isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()}
A = {"X-Project": "pa"}
B = {"X-Project": "pb"}

# name: (toxicity score, mentions muslim, human label or None) -- the fairness tests' six texts plus one
# unlabeled background text.
TEXTS = {
    1: (0.9, True, 1),
    2: (0.2, True, 0),
    3: (0.7, True, 0),
    4: (0.8, False, 1),
    5: (0.3, False, 0),
    6: (0.6, False, 1),
    7: (0.1, False, None),
}


def tid(n: int) -> str:
    return f"{n:032x}"


def sid(n: int) -> str:
    return f"{n:016x}"


def evaluation(n: int, evaluator: str, label: str, score: float, project: str = "pa") -> Evaluation:
    return Evaluation(
        project_id=project,
        timestamp=T0 + timedelta(minutes=n),
        evaluated_at=T0 + timedelta(minutes=n, seconds=1),
        trace_id=tid(n),
        span_id=sid(n),
        service_name="svc",
        environment="test",
        request_model="gpt-4o",
        target="output",
        evaluator=evaluator,
        label=label,
        score=score,
        model_name="detoxify-original" if evaluator == "toxicity" else "veil-identity-lexicon",
        model_version="toxic_original-c1212f89" if evaluator == "toxicity" else "1",
    )


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    rows = []
    for n, (score, muslim, _) in TEXTS.items():
        rows.append(evaluation(n, "toxicity", "toxicity", score))
        rows.append(evaluation(n, "toxicity", "insult", score / 2))
        if muslim:
            rows.append(evaluation(n, "identity", "muslim", 1.0))
    # Another project's texts: all toxic, all mentioning the group. They must never show up for "pa".
    for n in range(20, 25):
        rows.append(evaluation(n, "toxicity", "toxicity", 0.99, project="pb"))
        rows.append(evaluation(n, "identity", "muslim", 1.0, project="pb"))
    store.insert(Evaluation.TABLE, [r.as_row() for r in rows], Evaluation.COLUMNS)

    def project(x_project: str = Header()) -> str:
        return x_project

    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_store] = lambda: store
    app.dependency_overrides[get_project] = project
    with TestClient(app) as test_client:
        yield test_client


def label_all(client: TestClient) -> None:
    for n, (_, _, label) in TEXTS.items():
        if label is not None:
            body = {"trace_id": tid(n), "span_id": sid(n), "name": "toxicity", "value": label, "author": "qa"}
            response = client.post("/api/feedback", json=body, headers=A)
            assert response.status_code == 201, response.text
            assert response.json()["trace_id"] == tid(n)


def test_list_filters_by_evaluator_label_and_score(client: TestClient) -> None:
    params = {**WINDOW, "evaluator": "toxicity", "label": "toxicity", "min_score": 0.5, "max_score": 0.85}
    response = client.get("/api/evaluations", params=params, headers=A)
    assert response.status_code == 200
    body = response.json()
    # Scores 0.7, 0.8, 0.6 (newest span first); 0.9 is above the range.
    assert [row["trace_id"] for row in body] == [tid(6), tid(4), tid(3)]
    assert {row["name"] for row in body} == {"toxicity"}
    assert body[0]["score"] == pytest.approx(0.6)
    assert body[0]["model_name"] == "detoxify-original"
    assert body[0]["model_version"] == "toxic_original-c1212f89"
    identity = client.get("/api/evaluations", params={**WINDOW, "evaluator": "identity"}, headers=A).json()
    assert [(row["trace_id"], row["label"]) for row in identity] == [
        (tid(3), "muslim"),
        (tid(2), "muslim"),
        (tid(1), "muslim"),
    ]


def test_list_is_project_scoped_and_limited(client: TestClient) -> None:
    mine = client.get("/api/evaluations", params={**WINDOW, "limit": 1000}, headers=A).json()
    assert len(mine) == 7 * 2 + 3
    theirs = client.get("/api/evaluations", params={**WINDOW, "limit": 3}, headers=B).json()
    assert len(theirs) == 3
    assert {row["trace_id"] for row in theirs} <= {tid(n) for n in range(20, 25)}
    window_before = {
        "start": (T0 - timedelta(hours=5)).isoformat(),
        "end": (T0 - timedelta(hours=4)).isoformat(),
    }
    assert client.get("/api/evaluations", params=window_before, headers=A).json() == []


BAD_FILTERS = [
    ({"min_score": 0.9, "max_score": 0.1}, 400),
    ({"min_score": 1.5}, 422),
    ({"limit": 0}, 422),
    ({"trace_id": "not-hex"}, 422),
    ({"start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z"}, 400),
]
BAD_FEEDBACK = [
    {"trace_id": "xyz", "span_id": "0" * 16, "value": 1},
    {"trace_id": "0" * 32, "span_id": "0" * 15, "value": 1},
    {"trace_id": "0" * 32, "span_id": "0" * 16, "value": "toxic"},
    {"trace_id": "0" * 32, "span_id": "0" * 16},
    {"trace_id": "0" * 32, "span_id": "0" * 16, "value": 1, "name": "Bad Name"},
    {"trace_id": "0" * 32, "span_id": "0" * 16, "value": 1, "surprise": True},
]


def test_bad_input_gets_a_clear_status(client: TestClient, store: Store) -> None:
    # One database for all cases (each fresh database costs a migration).
    for params, status in BAD_FILTERS:
        response = client.get("/api/evaluations", params=params, headers=A)
        assert response.status_code == status, (params, response.text)
    assert (
        "min_score (0.9) must not exceed max_score (0.1)"
        in client.get("/api/evaluations", params=BAD_FILTERS[0][0], headers=A).json()["detail"]
    )
    for body in BAD_FEEDBACK:
        assert client.post("/api/feedback", json=body, headers=A).status_code == 422, body
    assert store.query("SELECT count() FROM feedback").result_rows == [(0,)]
    assert client.get("/api/bias", params={"threshold": 2}, headers=A).status_code == 422
    assert client.get("/api/bias", params={"target": "both"}, headers=A).status_code == 422


def test_feedback_rows_are_project_scoped(client: TestClient, store: Store) -> None:
    body = {"trace_id": tid(1), "span_id": sid(1), "value": 1, "comment": "slur", "author": "qa"}
    assert client.post("/api/feedback", json=body, headers=B).status_code == 201
    stored = store.query("SELECT ProjectId, Name, Value, Comment, Author FROM feedback").result_rows
    assert stored == [("pb", "toxicity", 1.0, "slur", "qa")]


def test_bias_rates_without_labels(client: TestClient) -> None:
    report = client.get("/api/bias", params=WINDOW, headers=A).json()
    assert (report["texts"], report["flagged"], report["labeled_texts"]) == (7, 4, 0)
    groups = {g["group"]: g for g in report["groups"]}
    assert len(groups) == 9
    muslim = groups["muslim"]
    # Mentions: 0.9, 0.2, 0.7 -> 2 of 3 flagged. Background: 0.8, 0.3, 0.6, 0.1 -> 2 of 4.
    assert (muslim["texts"], muslim["flagged"], muslim["background_texts"]) == (3, 2, 4)
    assert muslim["rate"] == pytest.approx(2 / 3)
    assert muslim["background_rate"] == pytest.approx(0.5)
    assert muslim["rate_ratio"] == pytest.approx(4 / 3)
    assert muslim["subgroup_auc"] is None and report["final_score"] is None
    assert groups["jewish"]["texts"] == 0 and groups["jewish"]["rate"] is None
    assert groups["jewish"]["background_rate"] == pytest.approx(4 / 7)
    strict = client.get("/api/bias", params={**WINDOW, "threshold": 0.75}, headers=A).json()
    assert strict["flagged"] == 2  # 0.9 and 0.8


def test_bias_aucs_with_human_labels(client: TestClient) -> None:
    label_all(client)
    report = client.get("/api/bias", params=WINDOW, headers=A).json()
    assert report["labeled_texts"] == 6
    muslim = next(g for g in report["groups"] if g["group"] == "muslim")
    # Hand-computed in test_classify_fairness: subgroup 1, BPSN 3/4, BNSP 1, overall 8/9.
    assert (muslim["subgroup_auc"], muslim["bpsn_auc"], muslim["bnsp_auc"]) == pytest.approx((1.0, 0.75, 1.0))
    assert muslim["labeled_texts"] == 3
    assert report["overall_auc"] == pytest.approx(8 / 9)
    assert report["final_score"] == pytest.approx(0.25 * 8 / 9 + 0.75 * (1.0 + 0.75 + 1.0) / 3)
    # Project B sees none of A's labels.
    other = client.get("/api/bias", params=WINDOW, headers=B).json()
    assert (other["texts"], other["labeled_texts"]) == (5, 0)
