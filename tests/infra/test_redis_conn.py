"""`infra.redis_conn`: which Redis ``ELIMU_REDIS`` names, and the slot grouping of batch writes."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from infra.redis_conn import ClusterAddress, by_slot, connect, connect_pubsub, is_cluster_url, slot


def test_a_cluster_url_lists_its_seed_nodes_and_credentials() -> None:
    address = ClusterAddress.parse("redis+cluster://elimu:p%40ss%3Aw@10.0.0.1:7000,redis-b:7001")
    assert address.nodes == [("10.0.0.1", 7000), ("redis-b", 7001)]
    assert address.credentials == {"username": "elimu", "password": "p@ss:w"}
    assert ClusterAddress.parse("redis+cluster://h:1").credentials == {"username": None, "password": None}


@pytest.mark.parametrize("url", ["redis+cluster://", "redis+cluster://host", "redis+cluster://h:1,h:x"])
def test_a_cluster_url_without_host_and_port_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="not host:port"):
        ClusterAddress.parse(url)


async def test_the_scheme_chooses_the_client() -> None:
    assert not is_cluster_url("redis://127.0.0.1:6379/0")
    single, cluster = connect("redis://127.0.0.1:1/0"), connect("redis+cluster://127.0.0.1:1,127.0.0.1:2")
    assert isinstance(single, Redis) and isinstance(cluster, RedisCluster)
    listener = connect_pubsub("redis+cluster://u:pw@127.0.0.1:1,127.0.0.1:2")
    kwargs = listener.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["username"], kwargs["password"]) == (
        "127.0.0.1",
        1,
        "u",
        "pw",
    )
    for client in (single, cluster, listener):
        await client.aclose()


def test_keys_group_by_hash_tag() -> None:
    # Redis's own examples: the tag, not the whole key, decides the slot.
    assert slot("{user1000}.following") == slot("{user1000}.followers") == slot("user1000")
    assert slot("foo{}{bar}") != slot("bar")  # an empty first tag hashes the whole key
    keys = ["elimu:u:{a}:state", "elimu:ch:user:{a}:seq", "elimu:u:{b}:state"]
    single = Redis()
    assert by_slot(single, keys) == {0: [0, 1, 2]}
