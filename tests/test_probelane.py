"""Which requests the probe lane takes: whole, bodiless GETs of /healthz and /readyz."""

import pytest

from receiver.probelane import is_whole_probe


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nUser-Agent: kube-probe/1.30\r\n\r\n",
        b"GET /readyz HTTP/1.1\r\n\r\n",
        b"HEAD /healthz?verbose=1 HTTP/1.0\r\nAccept: */*\r\n\r\n",
    ],
)
def test_a_whole_probe_takes_the_lane(head):
    assert is_whole_probe(head)


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",  # headers not all there yet
        b"GET /healthz HTTP/1.1",
        b"POST / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /status HTTP/1.1\r\n\r\n",
        b"GET /healthzz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\n",  # a body to wait for
        b"GET /readyz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
def test_anything_else_is_served_with_the_pushes(head):
    assert not is_whole_probe(head)
