from proxy.backends.promtext import sum_samples

TEXT = """# HELP vllm:num_requests_running Number of requests running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="a"} 3.0
vllm:num_requests_running{engine="1",model_name="a"} 2.0
vllm:num_requests_waiting{model_name="a"} 7
vllm:kv_cache_usage_perc 0.25
vllm:num_requests_running_extra 100
bad_line_without_value
vllm:num_requests_waiting{model_name="b"} NaN
"""


def test_sums_over_label_sets_and_ignores_others() -> None:
    found = sum_samples(
        TEXT, ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"]
    )
    assert found == {
        "vllm:num_requests_running": 5.0,
        "vllm:num_requests_waiting": 7.0,
        "vllm:kv_cache_usage_perc": 0.25,
    }


def test_missing_metric_is_absent() -> None:
    assert sum_samples(TEXT, ["sglang:num_running_reqs"]) == {}
