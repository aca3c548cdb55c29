"""The CLI's pure helpers: KEY=VALUE parsing and turning an API error body into what the user reads."""

import httpx
import pytest
import typer

from ikoma.cli.client import ApiError, OrderFilters, without_unset
from ikoma.cli.orders import parse_params
from ikoma.cli.output import format_cell, format_error
from ikoma.cli.servers import parse_labels


def test_label_values_stay_strings_even_when_they_look_like_json() -> None:
    assert parse_labels(["env=prod", "port=22", "canary=true"]) == {
        "env": "prod",
        "port": "22",
        "canary": "true",
    }


def test_label_value_keeps_every_equals_sign_after_the_first() -> None:
    assert parse_labels(["query=a=b"]) == {"query": "a=b"}


def test_label_value_may_be_empty() -> None:
    assert parse_labels(["note="]) == {"note": ""}


def test_repeated_label_key_keeps_the_last_value() -> None:
    assert parse_labels(["env=dev", "env=prod"]) == {"env": "prod"}


@pytest.mark.parametrize("pair", ["env", "=prod", ""])
def test_label_without_key_and_equals_sign_is_refused(pair: str) -> None:
    with pytest.raises(typer.BadParameter, match="expected KEY=VALUE"):
        parse_labels([pair])


def test_param_values_are_read_as_json_when_they_parse() -> None:
    params = parse_params(["count=3", "ratio=0.5", "dry=true", "skip=null", "hosts=[1, 2]", 'tag="42"'])
    assert params == {"count": 3, "ratio": 0.5, "dry": True, "skip": None, "hosts": [1, 2], "tag": "42"}


def test_param_value_that_is_not_json_stays_text() -> None:
    assert parse_params(["package=nginx", "version=1.2.3", "empty="]) == {
        "package": "nginx",
        "version": "1.2.3",
        "empty": "",
    }


def test_param_pairs_override_keys_of_params_json() -> None:
    params = parse_params(["count=5"], params_json='{"count": 1, "mode": "fast"}')
    assert params == {"count": 5, "mode": "fast"}


def test_params_json_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(typer.BadParameter, match="must be a JSON object"):
        parse_params([], params_json="[1, 2]")


def test_params_json_that_does_not_parse_is_refused() -> None:
    with pytest.raises(typer.BadParameter, match="not valid JSON"):
        parse_params([], params_json="{count: 1}")


def test_param_without_equals_sign_is_refused() -> None:
    with pytest.raises(typer.BadParameter, match="expected KEY=VALUE"):
        parse_params(["count"])


def test_unset_options_are_left_out_of_the_request_body() -> None:
    assert without_unset(name="web-1", port=None, labels={}) == {"name": "web-1", "labels": {}}


def test_order_filters_send_only_the_given_filters_in_api_names() -> None:
    assert OrderFilters(status="QUEUED", server_id="s-1").to_query() == {
        "status": "QUEUED",
        "serverId": "s-1",
    }


def test_error_body_becomes_api_error_with_reason_message_and_details() -> None:
    response = httpx.Response(
        409,
        json={
            "reason": "invalid_status",
            "message": "order already ended",
            "details": {"orderId": "o-1", "status": "SUCCEEDED"},
        },
    )
    error = ApiError.from_response(response)
    assert (error.status, error.reason) == (409, "invalid_status")
    assert error.details == {"orderId": "o-1", "status": "SUCCEEDED"}
    assert format_error(error) == [
        "error: invalid_status: order already ended (orderId=o-1, status=SUCCEEDED)"
    ]


def test_validation_error_lists_each_offending_field_path() -> None:
    response = httpx.Response(
        422,
        json={
            "reason": "validation_error",
            "message": "request is invalid",
            "errors": [
                {"path": "port", "message": "Input should be less than or equal to 65535", "type": "x"},
                {"path": "hostname", "message": "Field required", "type": "missing"},
            ],
        },
    )
    assert format_error(ApiError.from_response(response)) == [
        "error: validation_error: request is invalid",
        "  port: Input should be less than or equal to 65535",
        "  hostname: Field required",
    ]


def test_error_body_round_trips_to_the_api_shape_for_json_output() -> None:
    body = {"reason": "validation_error", "message": "bad", "errors": [{"path": "name", "message": "m"}]}
    assert ApiError.from_response(httpx.Response(422, json=body)).to_body() == body


def test_error_answer_without_the_api_shape_keeps_status_and_text() -> None:
    error = ApiError.from_response(httpx.Response(502, text="Bad Gateway from proxy"))
    assert (error.status, error.reason, error.message) == (502, "http_502", "Bad Gateway from proxy")


def test_table_cells_show_null_booleans_and_labels_readably() -> None:
    assert [format_cell(None), format_cell(True), format_cell({"env": "prod", "tier": "web"})] == [
        "-",
        "yes",
        "env=prod, tier=web",
    ]
