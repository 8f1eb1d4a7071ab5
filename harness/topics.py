"""Topic namespaces: every worker (and every test) publishes under its own level-exact prefix."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from harness.errors import TopicError

MAX_TOPIC_BYTES = 65535


def node_token(nodeid: str) -> str:
    """A short, stable token for a test node id: ``t`` + 6 hex digits."""
    return "t" + hashlib.blake2b(nodeid.encode(), digest_size=3).hexdigest()


def _check_common(text: str, what: str) -> None:
    if not isinstance(text, str):
        raise TopicError(f"harness: {what} {text!r} is not a string; pass a str")
    if text == "":
        raise TopicError(f"harness: {what} is empty; pass a topic such as 'camera/0/status'")
    if "\x00" in text:
        raise TopicError(f"harness: {what} {text!r} contains NUL; remove the NUL character")


@dataclass(frozen=True)
class TopicNamespace:
    """A prefix such as ``test/3f2a9c1e/gw1`` and the translations in and out of it.

    Ownership is level-exact: ``test/r/gw1`` owns ``test/r/gw1/x`` but not ``test/r/gw10/x``.
    """

    prefix: str

    def __post_init__(self) -> None:
        _check_common(self.prefix, "namespace prefix")
        if "+" in self.prefix or "#" in self.prefix or self.prefix.endswith("/"):
            raise TopicError(
                f"harness: namespace prefix {self.prefix!r} has a wildcard or a trailing '/';"
                " use plain levels such as 'test/run/gw0'"
            )

    def owns(self, topic: str) -> bool:
        return topic == self.prefix or topic.startswith(self.prefix + "/")

    def topic(self, topic: str) -> str:
        """The namespaced topic for ``topic``; a topic already inside the namespace is kept."""
        _check_common(topic, "topic")
        if "+" in topic or "#" in topic:
            raise TopicError(
                f"harness: topic {topic!r} contains a wildcard ('+' or '#'), which MQTT allows only"
                " in subscription filters; use .filter() for subscriptions"
            )
        full = topic if self.owns(topic) else f"{self.prefix}/{topic}"
        size = len(full.encode("utf-8"))
        if size > MAX_TOPIC_BYTES:
            raise TopicError(
                f"harness: topic {topic[:40]!r}... is {size} bytes with the prefix; MQTT allows"
                f" at most {MAX_TOPIC_BYTES} bytes of UTF-8; shorten it"
            )
        return full

    def filter(self, pattern: str) -> str:
        """Translate a subscription filter (wildcards allowed) into the namespace."""
        _check_common(pattern, "filter")
        levels = pattern.split("/")
        for i, level in enumerate(levels):
            if "#" in level and (level != "#" or i != len(levels) - 1):
                raise TopicError(
                    f"harness: filter {pattern!r} uses '#' other than as the whole last level;"
                    " write e.g. 'camera/#'"
                )
            if "+" in level and level != "+":
                raise TopicError(
                    f"harness: filter {pattern!r} uses '+' inside a level; '+' must be a whole"
                    " level, e.g. 'camera/+/status'"
                )
        full = pattern if self.owns(pattern) else f"{self.prefix}/{pattern}"
        if len(full.encode("utf-8")) > MAX_TOPIC_BYTES:
            raise TopicError(f"harness: filter {pattern[:40]!r}... is over {MAX_TOPIC_BYTES} bytes")
        return full

    def strip(self, topic: str) -> str:
        """The topic as the code under test sees it, without the prefix."""
        if topic.startswith(self.prefix + "/"):
            return topic[len(self.prefix) + 1 :]
        raise TopicError(
            f"harness: topic {topic!r} is not under namespace {self.prefix!r}; only topics this"
            " namespace owns can be stripped (check .owns() first)"
        )

    def child(self, level: str) -> TopicNamespace:
        """A nested namespace, e.g. one per test."""
        return TopicNamespace(self.topic(level))

    def env(self) -> dict[str, str]:
        """Environment for services started by tests, so they publish inside the namespace."""
        return {"TOPIC_PREFIX": self.prefix, "MQTT_TOPIC_PREFIX": self.prefix}
