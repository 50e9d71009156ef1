"""A real Redis Sentinel deployment on loopback: a master, replicas and three sentinels.

Every process is a ``redis-server`` of the test's own (sentinels run the same binary with
``--sentinel``), on free ports, so a test may SIGKILL the master or cut replication.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from dispatcher.cli.embedded import free_port
from tests.conftest import RedisServer, redis_server_binary

MASTER_NAME = "mymaster"
#: A master silent this long is subjectively down (Redis's default is 30 s). At 1 s, on a
#: loaded 2-core machine, the sentinels now and then took the master they had just
#: promoted for down too, and failed over a second time.
DOWN_AFTER_MS = 1500
#: Bounds a failover's steps (and how soon a failed one is tried again); also how long
#: the sentinels leave a replica following the wrong master alone (`cut_replication`).
FAILOVER_TIMEOUT_MS = 10000


class Sentinel:
    """One ``redis-server --sentinel`` process with its own config file."""

    def __init__(self, master_port: int, quorum: int, password: str = "") -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="dispatcher-sentinel-")
        self.conf = Path(self.dir) / "sentinel.conf"
        self.conf.write_text("\n".join([
            f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} 2", "logfile sentinel.log",
            *([f"sentinel auth-pass {MASTER_NAME} {password}"] if password else []), ""]))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sentinel:
        self.proc = subprocess.Popen([redis_server_binary(), str(self.conf), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=1)

    def master(self) -> tuple[str, int] | None:
        """The master this sentinel names now (None: it cannot be asked)."""
        try:
            host, port = self.client().sentinel_get_master_addr_by_name(MASTER_NAME)
        except (redis.RedisError, TypeError):
            return None
        return (host.decode() if isinstance(host, bytes) else str(host)), int(port)

    def log(self) -> str:
        path = Path(self.dir) / "sentinel.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelCluster:
    """A master, ``replicas`` replicas and three sentinels (quorum 2)."""

    def __init__(self, replicas: int = 1, password: str = "") -> None:
        self.password = password
        self.master = RedisServer(appendonly=True, fsync="everysec")
        self.replicas = [RedisServer(appendonly=True, fsync="everysec") for _ in range(replicas)]
        for server in self.servers:  # any of them may become the master
            server.args += ["--repl-diskless-sync-delay", "0"]
        for replica in self.replicas:
            replica.args += ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.sentinels = [Sentinel(self.master.port, 2, password) for _ in range(3)]

    def url(self, db: int = 0, password: str = "") -> str:
        auth = f":{password}@" if password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"sentinel://{auth}{hosts}/{db}"

    def server_client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.password or None, socket_timeout=2)

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    def start(self, timeout: float = 20) -> SentinelCluster:
        for server in self.servers:
            server.start()
            if self.password:  # after start: RedisServer.start pings without one
                client = redis.Redis(port=server.port)
                client.config_set("masterauth", self.password)
                client.config_set("requirepass", self.password)
        for sentinel in self.sentinels:
            sentinel.start()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if (self._synced() and all(s.master() == ("127.0.0.1", self.master.port)
                                       for s in self.sentinels) and self._sentinels_see_all()):
                return self
            time.sleep(0.1)
        self.stop()  # nothing of it outlives the failed start
        raise RuntimeError("the sentinel deployment did not come up")

    def _synced(self) -> bool:
        try:
            info = self.server_client(self.master.port).info("replication")
        except redis.RedisError:
            return False
        online = [v for k, v in info.items()
                  if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"]
        return len(online) == len(self.replicas)

    def _sentinels_see_all(self) -> bool:
        """Each sentinel knows the replicas and the other two sentinels (so it can vote)."""
        for s in self.sentinels:
            try:
                state = s.client().sentinel_master(MASTER_NAME)
            except redis.RedisError:
                return False
            if (int(state.get("num-slaves", 0)) < len(self.replicas)
                    or int(state.get("num-other-sentinels", 0)) < 2):
                return False
        return True

    def current_master(self) -> int | None:
        """The master's port as a majority of sentinels names it."""
        votes: dict[int, int] = {}
        for s in self.sentinels:
            found = s.master()
            if found:
                votes[found[1]] = votes.get(found[1], 0) + 1
        best = max(votes.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best and best[1] >= 2 else None

    def failovers(self) -> int:
        """Failovers so far (the most ``+switch-master`` lines any sentinel logged)."""
        return max(s.log().count("+switch-master") for s in self.sentinels)

    def cut_replication(self) -> None:
        """The replicas lose their link to the master, as in a network partition.

        Each is pointed at a port nobody listens on: it keeps its data set and receives
        nothing more. (SIGSTOP would not do: the kernel keeps buffering the replication
        stream, and the replica reads it all when it runs again.) The sentinels leave such
        a replica alone for ``FAILOVER_TIMEOUT_MS``, and reconfigure it in a failover.
        """
        nowhere = free_port()
        for replica in self.replicas:
            self.server_client(replica.port).replicaof("127.0.0.1", nowhere)

    def freeze_master(self) -> None:
        """SIGSTOP the master: unreachable, but it comes back (with its clients) on thaw."""
        assert self.master.proc is not None
        os.kill(self.master.proc.pid, signal.SIGSTOP)

    def thaw_master(self) -> None:
        if self.master.proc is not None and self.master.proc.poll() is None:
            os.kill(self.master.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.thaw_master()
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.stop()
