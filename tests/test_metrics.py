from proxy.metrics import Metrics


def test_labelled_children_are_bound_once_and_counted() -> None:
    metrics = Metrics()
    child = metrics.tokens.labels("e1", "prompt")
    assert metrics.tokens.labels("e1", "prompt") is child
    child.inc(3)
    metrics.tokens.labels("e1", "prompt").inc(2)
    metrics.tokens.labels("e2", "prompt").inc(1)
    text = metrics.render().decode()
    assert 'autellix_tokens_total{engine="e1",kind="prompt"} 5.0' in text
    assert 'autellix_tokens_total{engine="e2",kind="prompt"} 1.0' in text
