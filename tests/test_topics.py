"""Topic namespaces: translation, validation and level-exact ownership."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import TopicError, TopicNamespace
from harness.topics import node_token

level = st.text(
    alphabet=st.characters(blacklist_characters="/+#\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=12,
)
topics = st.lists(level, min_size=1, max_size=6).map("/".join)


@given(topics)
def test_strip_inverts_topic(t: str) -> None:
    ns = TopicNamespace("test/run1/gw3")
    full = ns.topic(t)
    assert ns.owns(full)
    assert ns.topic(full) == full  # idempotent
    if not ns.owns(t):
        assert ns.strip(full) == t


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=200), topics)
def test_ownership_is_level_exact(a: int, b: int, t: str) -> None:
    mine, other = TopicNamespace(f"test/r/gw{a}"), TopicNamespace(f"test/r/gw{b}")
    assert mine.owns(other.topic(t)) == (a == b)


def test_gw1_does_not_own_gw10() -> None:
    ns = TopicNamespace("test/r/gw1")
    assert not ns.owns("test/r/gw10/x")
    assert ns.owns("test/r/gw1/x")
    assert ns.owns("test/r/gw1")
    with pytest.raises(TopicError, match="not under namespace 'test/r/gw1'"):
        ns.strip("test/r/gw10/x")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("#", "p/q/#"),
        ("camera/+/status", "p/q/camera/+/status"),
        ("+", "p/q/+"),
        ("a/b", "p/q/a/b"),
        ("p/q/a/#", "p/q/a/#"),
    ],
)
def test_filter_translation(pattern: str, expected: str) -> None:
    assert TopicNamespace("p/q").filter(pattern) == expected


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("a/+/b", "wildcard"),
        ("a/#", "wildcard"),
        ("a\x00b", "NUL"),
        ("", "empty"),
        ("x" * 65536, "65535 bytes"),
    ],
)
def test_topic_rejects(bad: str, message: str) -> None:
    with pytest.raises(TopicError, match=message):
        TopicNamespace("p").topic(bad)


@pytest.mark.parametrize("bad", ["a/#/b", "a#", "a/b+", "#/x"])
def test_filter_rejects_misplaced_wildcards(bad: str) -> None:
    with pytest.raises(TopicError, match="harness: filter"):
        TopicNamespace("p").filter(bad)


@pytest.mark.parametrize("bad", ["a/+", "a/", "a/#"])
def test_prefix_rejects_wildcards(bad: str) -> None:
    with pytest.raises(TopicError, match="namespace prefix"):
        TopicNamespace(bad)


def test_env_for_services() -> None:
    assert TopicNamespace("test/r/gw0").env() == {
        "TOPIC_PREFIX": "test/r/gw0",
        "MQTT_TOPIC_PREFIX": "test/r/gw0",
    }


def test_node_token_is_short_and_stable() -> None:
    tok = node_token("tests/test_x.py::test_y[1]")
    assert tok == node_token("tests/test_x.py::test_y[1]")
    assert tok != node_token("tests/test_x.py::test_y[2]")
    assert len(tok) == 7 and tok.startswith("t")


def test_per_test_namespaces_are_distinct(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_ns="""
import pytest
seen = set()

@pytest.mark.parametrize("i", range(5))
def test_t(test_topics, topic_namespace, i):
    assert topic_namespace.owns(test_topics.prefix)
    assert test_topics.prefix not in seen
    seen.add(test_topics.prefix)
"""
    )
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=5)
