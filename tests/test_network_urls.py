"""One URL rule for every place that takes a node or client URL (network/urls.py)."""

from __future__ import annotations

import pytest

from network.urls import BadURL, HttpURL, split_http_url


def test_a_good_url_splits_into_its_parts() -> None:
    assert split_http_url("https://node.example.gov.cn:8443/api?x=1") == HttpURL(
        "https", "node.example.gov.cn", 8443, "/api", "x=1")
    u = split_http_url("http://[::1]/")
    assert (u.host, u.port, u.effective_port, u.https) == ("::1", None, 80, False)
    assert split_http_url("https://h").effective_port == 443


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://host/", "is not an http:// or https:// URL with a host"),
    ("http:///path", "is not an http:// or https:// URL with a host"),
    ("node-1:26601", "is not an http:// or https:// URL with a host"),
    ("http://host:99999", "is not a valid URL: Port out of range"),
    ("http://host:port", "is not a valid URL"),
    ("http://[::1", "is not a valid URL: Invalid IPv6 URL"),
])
def test_a_bad_url_is_named_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(BadURL) as info:
        split_http_url(url)
    assert str(info.value).startswith(repr(url)) and why in str(info.value)
