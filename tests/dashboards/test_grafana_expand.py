"""The macro expander the dashboard tests rely on behaves like Grafana and the ClickHouse plugin."""

from __future__ import annotations

from datetime import datetime, timezone

from grafana_expand import (
    ALL,
    TimeRange,
    Variable,
    apply_conditional_all,
    expand,
    expand_backend_macros,
    interpolate_variables,
)

RANGE = TimeRange(
    start=datetime(2026, 1, 1, tzinfo=timezone.utc),
    end=datetime(2026, 1, 1, 1, tzinfo=timezone.utc),
    interval_s=0.2,
)
SERVICE_ALL = Variable("service", [ALL], ("a", "b"))


def test_conditional_all_drops_the_condition_for_all_empty_and_keeps_it_otherwise() -> None:
    sql = "WHERE $__conditionalAll(s IN (${service:singlequote}), $service) AND x"
    assert apply_conditional_all(sql, [SERVICE_ALL]) == "WHERE 1=1 AND x"
    assert apply_conditional_all(sql, [Variable("service", [])]) == "WHERE 1=1 AND x"
    assert (
        apply_conditional_all(sql, [Variable("service", ["a"])])
        == "WHERE s IN (${service:singlequote}) AND x"
    )
    # An unknown variable keeps the condition, like the plugin (key?.current is undefined).
    assert apply_conditional_all(sql, []) == "WHERE s IN (${service:singlequote}) AND x"


def test_conditional_all_accepts_braced_variables_and_nested_parentheses() -> None:
    sql = "$__conditionalAll(f(a, (b)) > 0, ${service}) AND $__conditionalAll(c = 1, $model)"
    variables = [SERVICE_ALL, Variable("model", "m")]
    assert apply_conditional_all(sql, variables) == "1=1 AND c = 1"


def test_conditional_all_with_a_top_level_comma_is_left_unexpanded() -> None:
    sql = "WHERE $__conditionalAll(a = 1, b = 2, $service)"
    assert apply_conditional_all(sql, [SERVICE_ALL]) == sql


def test_conditional_all_replacement_follows_javascript_patterns() -> None:
    # String.prototype.replace interprets $$ in the replacement as a single $.
    assert apply_conditional_all("$__conditionalAll(x = '$$', $v)", [Variable("v", "1")]) == "x = '$'"


def test_interpolation_formats_and_all() -> None:
    sql = "${service:singlequote} | $service | ${p:singlequote} | $__interval_s | $unknown"
    variables = [SERVICE_ALL, Variable("p", "o'k")]
    assert interpolate_variables(sql, variables) == "'a','b' | 'a','b' | 'o\\'k' | $__interval_s | $unknown"


def test_backend_macros() -> None:
    sql = "WHERE $__timeFilter( Timestamp ) GROUP BY INTERVAL $__interval_s second"
    assert expand_backend_macros(sql, RANGE) == (
        "WHERE Timestamp >= toDateTime(1767225600) AND Timestamp <= toDateTime(1767229200) "
        "GROUP BY INTERVAL 1 second"
    )


def test_expand_runs_the_three_stages_in_order() -> None:
    sql = "SELECT 1 WHERE $__conditionalAll(s IN (${service:singlequote}), $service) AND $__timeFilter(t)"
    expanded = expand(sql, [Variable("service", ["a"])], RANGE)
    assert (
        expanded
        == "SELECT 1 WHERE s IN ('a') AND t >= toDateTime(1767225600) AND t <= toDateTime(1767229200)"
    )
