"""One Redis or a Redis Cluster, from ``ELIMU_REDIS``, and the few operations that differ.

``redis://host:port/db`` is one Redis. ``redis+cluster://[user:password@]host:port[,host:port...]``
is a Redis Cluster reached through any of the listed nodes (the rest of the topology is
discovered; a cluster has only database 0). The
key layout (infra/keys.py) hash-tags what one script or pipeline touches into one slot, so the
engine never sends a cross-slot command; where a batch spans users it is split by slot here.

Pub/sub is classic PUBLISH/SUBSCRIBE: on a cluster it is broadcast to every node, so a
subscriber on any node hears what a script published on another (sharded pub/sub needs Redis 7;
the embedded redis-server is 6.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

CLUSTER_SCHEME = "redis+cluster"

#: What the engine talks to: both share the command methods it uses.
RedisClient: TypeAlias = Redis | RedisCluster


def as_text(value: bytes | str) -> str:
    """A reply as text: the clients answer bytes unless told to decode (ours are not), and a
    test's client may be. Undecodable bytes are replaced, never raised on: a reply is data."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def is_cluster_url(url: str) -> bool:
    return url.startswith(f"{CLUSTER_SCHEME}://")


@dataclass(frozen=True)
class ClusterAddress:
    """A ``redis+cluster://[user:password@]host:port[,host:port...]`` URL, parsed."""

    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> ClusterAddress:
        netloc = urlsplit(url).netloc
        userinfo, _, hosts = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        nodes: list[tuple[str, int]] = []
        for part in hosts.split(","):
            host, _, port = part.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"cluster node {part!r} in ELIMU_REDIS is not host:port")
            nodes.append((host, int(port)))
        return cls(nodes, unquote(user) or None, unquote(password) or None)

    @property
    def credentials(self) -> dict[str, Any]:
        return {"username": self.username, "password": self.password}


def connect(url: str, **options: Any) -> RedisClient:
    """A client for ``url``; ``options`` are redis-py connection options (timeouts...)."""
    if is_cluster_url(url):
        address = ClusterAddress.parse(url)
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in address.nodes], **address.credentials, **options
        )
    return Redis.from_url(url, **options)


def connect_pubsub(url: str, **options: Any) -> Redis:
    """A plain client for SUBSCRIBE: to the one Redis, or to the first node of the cluster.

    Classic pub/sub reaches every node of a cluster, so one node will do; redis-py's cluster
    pub/sub object lacks the connect callbacks the hub resubscribes with (api/hub.py). While
    that node is down the hub retries it (docs/operations.md)."""
    if is_cluster_url(url):
        address = ClusterAddress.parse(url)
        host, port = address.nodes[0]
        return Redis(host=host, port=port, **address.credentials, **options)
    return Redis.from_url(url, **options)


def slot(key: str) -> int:
    return key_slot(key.encode("utf-8", "surrogatepass"))


def by_slot(client: RedisClient, keys: Sequence[str]) -> dict[int, list[int]]:
    """Indexes of ``keys`` grouped by hash slot (one group, slot 0, on a single Redis)."""
    if not isinstance(client, RedisCluster):
        return {0: list(range(len(keys)))}
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(slot(key), []).append(i)
    return groups


async def mget(client: RedisClient, keys: Sequence[str]) -> list[Any]:
    """MGET, split by slot on a cluster (values in the order of ``keys``)."""
    if not keys:
        return []
    if isinstance(client, RedisCluster):
        return await client.mget_nonatomic(list(keys))
    return await client.mget(list(keys))
