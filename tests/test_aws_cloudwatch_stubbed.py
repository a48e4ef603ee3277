"""What moto cannot show (it never pages and enforces no limits): GetMetricData batches of at
most 500 queries and 100,800 datapoints, NextToken followed to the last page, the period chosen
from CloudWatch's retention, and throttling, checked with botocore's Stubber on real clients
(requests are validated against the service model) and, for the retries, a local endpoint that
throttles twice before it answers."""

from __future__ import annotations

import datetime as dt
import http.server
import threading

import boto3
import pandas as pd
import pytest
from botocore.stub import ANY, Stubber

from capforecast.aws import cloudwatch
from capforecast.aws.cloudwatch import MAX_DATAPOINTS, MAX_QUERIES, Query
from capforecast.aws.errors import AwsError
from capforecast.aws.session import aws_client
from capforecast.config import validated_config
from capforecast.errors import ConfigError

START = pd.Timestamp("2026-11-20T00:00:00Z")


def _client():
    return boto3.client(
        "cloudwatch",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        endpoint_url="http://127.0.0.1:9",
    )


def _queries(n: int) -> list[Query]:
    return [
        Query(
            resource_id=f"i-{k:017x}",
            source_metric="AWS/EC2:CPUUtilization",
            statistic="Average",
            metric={
                "Namespace": "AWS/EC2",
                "MetricName": "CPUUtilization",
                "Dimensions": [{"Name": "InstanceId", "Value": f"i-{k:017x}"}],
            },
        )
        for k in range(n)
    ]


def _result(key: str, hours: list[int], value: float, status: str = "Complete") -> dict:
    return {
        "Id": key,
        "Label": key,
        "Timestamps": [(START + pd.Timedelta(hours=h)).to_pydatetime() for h in hours],
        "Values": [value + h for h in hours],
        "StatusCode": status,
    }


def _expect(stub, n_queries: int, results: list[dict], token_in=None, token_out=None):
    params = {
        "MetricDataQueries": ANY,
        "StartTime": ANY,
        "EndTime": ANY,
        "ScanBy": "TimestampAscending",
    }
    if token_in:
        params["NextToken"] = token_in
    response = {"MetricDataResults": results}
    if token_out:
        response["NextToken"] = token_out
    stub.add_response("get_metric_data", response, params)
    return n_queries


def test_batches_hold_at_most_500_queries_and_100800_datapoints():
    queries = _queries(1203)
    hourly = cloudwatch.batches(queries, 24 * 14)  # two weeks hourly: 336 points per query
    assert [len(b) for b in hourly] == [300, 300, 300, 300, 3]
    assert all(len(b) * 336 <= MAX_DATAPOINTS for b in hourly)
    few = cloudwatch.batches(queries, 24)  # one day hourly: the 500-query limit binds
    assert [len(b) for b in few] == [MAX_QUERIES, MAX_QUERIES, 203]
    # 1-minute data over its 15-day retention: 21,600 points, 4 queries a call.
    assert {len(b) for b in cloudwatch.batches(queries[:8], 15 * 1440)} == {4}
    assert sum(map(len, cloudwatch.batches(queries, 15 * 1440))) == 1203


def test_every_batch_and_every_page_is_fetched():
    cw = _client()
    queries = _queries(1100)  # 500 + 500 + 100 queries
    end = START + pd.Timedelta(hours=3)
    with Stubber(cw) as stub:
        # Batch 1 comes in two pages: q0 has hours 0-1 on page 1 and hour 2 on page 2.
        _expect(
            stub,
            500,
            [_result("q0", [0, 1], 10.0, "PartialData")]
            + [_result(f"q{i}", [0, 1, 2], float(i)) for i in range(1, 500)],
            token_out="page-2",
        )
        _expect(stub, 500, [_result("q0", [2], 10.0)], token_in="page-2")
        _expect(stub, 500, [_result(f"q{i}", [0, 1, 2], 1000.0 + i) for i in range(500)])
        _expect(stub, 100, [_result(f"q{i}", [0], 2000.0 + i) for i in range(100)])
        rows = cloudwatch.get_metric_data(cw, queries, START, end, 3600)
        stub.assert_no_pending_responses()
    assert len(rows) == 500 * 3 + 500 * 3 + 100
    first = rows[rows["resource_id"] == queries[0].resource_id]
    assert first["value"].tolist() == [10.0, 11.0, 12.0]  # both pages, in time order
    assert first["timestamp"].tolist() == [START + pd.Timedelta(hours=h) for h in range(3)]
    last = rows[rows["resource_id"] == queries[-1].resource_id]
    assert last["value"].tolist() == [2099.0]
    assert set(rows["metric"]) == {"AWS/EC2:CPUUtilization"}


def test_the_queries_sent_name_each_series_once_with_its_period_and_statistic():
    cw = _client()
    sent = []
    cw.meta.events.register(
        "provide-client-params.cloudwatch.GetMetricData",
        lambda params, **_: sent.append(params),
    )
    with Stubber(cw) as stub:
        _expect(stub, 2, [_result("q0", [0], 1.0), _result("q1", [0], 2.0)])
        cloudwatch.get_metric_data(cw, _queries(2), START, START + pd.Timedelta(hours=1), 300)
    (call,) = sent
    assert [q["Id"] for q in call["MetricDataQueries"]] == ["q0", "q1"]
    assert {q["MetricStat"]["Period"] for q in call["MetricDataQueries"]} == {300}
    assert {q["MetricStat"]["Stat"] for q in call["MetricDataQueries"]} == {"Average"}
    assert call["StartTime"] == START.to_pydatetime()


def test_a_failed_series_status_is_one_line_naming_it():
    cw = _client()
    bad = _result("q1", [], 0.0, "Forbidden")
    bad["Messages"] = [{"Code": "Forbidden", "Value": "no access to the namespace"}]
    with Stubber(cw) as stub:
        _expect(stub, 2, [_result("q0", [0], 1.0), bad])
        with pytest.raises(AwsError, match=r"i-0+1 AWS/EC2:CPUUtilization: Forbidden: no acc"):
            cloudwatch.get_metric_data(cw, _queries(2), START, START + pd.Timedelta(hours=1), 60)


@pytest.mark.parametrize("code", ["Throttling", "ThrottlingException", "RequestLimitExceeded"])
def test_throttling_that_outlasts_the_retries_is_one_line_naming_the_fix(code):
    cw = _client()
    with Stubber(cw) as stub:
        stub.add_client_error("get_metric_data", service_error_code=code, http_status_code=400)
        with pytest.raises(AwsError) as info:
            cloudwatch.get_metric_data(cw, _queries(3), START, START + pd.Timedelta(hours=1), 60)
    message = str(info.value)
    assert "\n" not in message
    assert f"throttled by AWS ({code})" in message
    assert "aws.max_attempts" in message and "aws.retry_mode: adaptive" in message


class _Throttling(http.server.BaseHTTPRequestHandler):
    """A CloudWatch endpoint on 127.0.0.1 that throttles the first two calls."""

    calls = 0

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        assert "json" in self.headers["Content-Type"]  # botocore's protocol for CloudWatch
        type(self).calls += 1
        if type(self).calls <= 2:
            body = b'{"__type":"Throttling","message":"Rate exceeded"}'
            self.send_response(400)
        else:
            body = (
                b'{"MetricDataResults":[{"Id":"q0","Label":"q0","Timestamps":[1795737600],'
                b'"Values":[42.5],"StatusCode":"Complete"}],"Messages":[]}'
            )
            self.send_response(200)
        self.send_header("Content-Type", self.headers["Content-Type"])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_throttling_is_retried_by_botocore_not_by_a_loop(aws_env, mode):
    _Throttling.calls = 0
    server = http.server.HTTPServer(("127.0.0.1", 0), _Throttling)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        aws = validated_config({"aws": {"endpoint_url": url, "retry_mode": mode}})["aws"]
        cw = aws_client("cloudwatch", aws)
        rows = cloudwatch.get_metric_data(
            cw, _queries(1), START, START + pd.Timedelta(days=7), 3600
        )
    finally:
        server.shutdown()
    assert _Throttling.calls == 3  # two throttled, one answered
    assert rows["value"].tolist() == [42.5]
    assert rows["timestamp"].tolist() == [pd.Timestamp("2026-11-27T00:00:00Z")]


NOW = pd.Timestamp("2026-11-30T12:00:00Z")


@pytest.mark.parametrize(
    ("days_back", "period"),
    [(1, 60), (14.9, 60), (15.1, 300), (62.9, 300), (63.1, 3600), (454, 3600)],
)
def test_auto_period_is_the_finest_the_retention_still_keeps(days_back, period):
    oldest = NOW - pd.Timedelta(days=days_back)
    assert cloudwatch.choose_period("auto", oldest, NOW) == period


def test_a_stored_period_is_kept_and_a_fixed_one_must_be_kept_by_cloudwatch():
    recent = NOW - pd.Timedelta(hours=2)
    # Incremental fetches keep the resolution of the first one.
    assert cloudwatch.choose_period("auto", recent, NOW, stored=300) == 300
    assert cloudwatch.choose_period(3600, recent, NOW) == 3600
    with pytest.raises(ConfigError, match=r"'data.cloudwatch.period': CloudWatch keeps 60-second"):
        cloudwatch.choose_period(60, NOW - pd.Timedelta(days=20), NOW)
    with pytest.raises(ConfigError, match=r"'data.cloudwatch.days'.*older than CloudWatch keeps"):
        cloudwatch.choose_period("auto", NOW - pd.Timedelta(days=456), NOW)


def test_until_is_the_configured_end_or_now_rounded_down_to_the_step():
    cw = {"end": "2026-11-01T06:00:00"}
    assert cloudwatch.fetch_until(cw, "1h") == "2026-11-01T06:00:00+00:00"
    now = pd.Timestamp(dt.datetime(2026, 11, 30, 12, 41, tzinfo=dt.UTC))
    assert cloudwatch.fetch_until({"end": None}, "15min", now) == "2026-11-30T12:30:00+00:00"
