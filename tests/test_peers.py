"""RECEIVER_PEERS: both forms parsed, bad values refused, our own address left out."""

import pytest

from receiver.config import Settings
from receiver.errors import ConfigError
from receiver.peers import Peers, is_own_address, parse_peers

NOT_OURS = "192.0.2.7"  # TEST-NET-1: never an address of this machine


def test_the_dns_form_names_a_service_and_its_port():
    assert parse_peers("dns:tf-serving-peers.serving.svc:8080") == Peers(
        dns_name="tf-serving-peers.serving.svc", dns_port=8080
    )
    assert parse_peers("") is None


def test_a_url_list_gets_the_push_path_where_it_names_none():
    peers = parse_peers(" http://10.0.0.5:8080, https://b.example/custom/push ,http://c:81/")
    assert peers is not None
    assert peers.urls == (
        "http://10.0.0.5:8080/push",
        "https://b.example/custom/push",
        "http://c:81/push",
    )


@pytest.mark.parametrize(
    "value",
    ["dns:name", "dns::8080", "dns:name:http", "dns:name:70000", "ftp://a/push", "a.example:8080",
     "http://a:notaport/push"],
)  # fmt: skip
def test_a_bad_value_is_refused_at_start_naming_the_setting(environ, value):
    with pytest.raises(ConfigError, match="RECEIVER_PEERS has value"):
        Settings.from_env({**environ, "RECEIVER_PEERS": value})


def test_an_address_is_ours_when_this_host_can_bind_to_it():
    assert is_own_address("127.0.0.1")
    assert not is_own_address(NOT_OURS)
    assert not is_own_address("not-an-address")


def test_dns_peers_leave_our_own_addresses_out():
    assert Peers(dns_name=NOT_OURS, dns_port=8080).resolve(own_port=8080) == [
        f"http://{NOT_OURS}:8080/push"
    ]
    assert Peers(dns_name="127.0.0.1", dns_port=8080).resolve(own_port=8080) == []
    assert Peers(dns_name="no-such-name.invalid", dns_port=8080).resolve(own_port=8080) == []


def test_one_url_list_serves_every_replica_each_leaving_itself_out():
    peers = parse_peers("http://127.0.0.1:9001,http://127.0.0.1:9002,http://192.0.2.7:9001")
    assert peers is not None
    assert peers.resolve(own_port=9001) == [
        "http://127.0.0.1:9002/push",
        f"http://{NOT_OURS}:9001/push",
    ]
    assert peers.resolve(own_port=9002) == [
        "http://127.0.0.1:9001/push",
        f"http://{NOT_OURS}:9001/push",
    ]
