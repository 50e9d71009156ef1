"""Redis servers of the secrets tests: one with an ACL user (``default`` off), one that
speaks only TLS with a certificate made here (openssl CLI), and their URLs."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from tests.conftest import free_port, redis_server_binary

ACL_USER = "dispatch-er"
#: Characters a URL must encode (@ : / %) in the password, to check every process decodes it.
ACL_PASSWORD = "pw-ACL-s3cr3t:@/%-0123456789"


class Server:
    """A redis-server process with extra arguments; ``ready`` says how to ping it."""

    def __init__(self, extra: list[str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="dispatcher-redis-sec-")
        self.args = [redis_server_binary(), "--bind", "127.0.0.1", "--dir", self.dir,
                     "--save", "", "--appendonly", "no", *extra]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(self.dir) / "redis.log"
        self.socket = Path(self.dir) / "redis.sock"

    def start(self, client: dict[str, Any]) -> Server:
        self.proc = subprocess.Popen([*self.args, "--logfile", str(self.log)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ping = redis.Redis(port=self.port, socket_connect_timeout=0.3, **client)
        deadline = time.time() + 15
        while True:
            try:
                if ping.ping():
                    return self
            except redis.ConnectionError:
                if time.time() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start:\n{self.log.read_text()}") from None
                time.sleep(0.05)
            finally:
                ping.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def acl_server() -> Server:
    """A Redis whose only user is ACL_USER (made with ACL SETUSER; ``default`` is off)."""
    server = Server(["--port", str(0)])
    server.args[server.args.index("--port") + 1] = str(server.port)
    server.args += ["--unixsocket", str(Path(server.dir) / "redis.sock"), "--unixsocketperm",
                    "700"]
    server.start({})
    admin = redis.Redis(port=server.port)
    admin.execute_command("ACL", "SETUSER", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "&*",
                          "+@all")
    admin.execute_command("ACL", "SETUSER", "default", "off")
    admin.close()
    return server


def make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate it signs (SAN 127.0.0.1 and localhost), and a second,
    unrelated CA that must not verify that server."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            f"/CN=dispatcher test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr")
    (folder / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    return {name: folder / f"{name}.crt" for name in ("ca", "other-ca", "server")} | {
        "server-key": folder / "server.key"}


def tls_server(certs: dict[str, Path]) -> Server:
    """A Redis that speaks only TLS (``--port 0``), clients not asked for certificates."""
    port = free_port()
    server = Server(["--port", "0", "--tls-port", str(port),
                     "--tls-cert-file", str(certs["server"]),
                     "--tls-key-file", str(certs["server-key"]),
                     "--tls-ca-cert-file", str(certs["ca"]), "--tls-auth-clients", "no"],
                    port=port)
    return server.start({"ssl": True, "ssl_ca_certs": str(certs["ca"]),
                         "ssl_cert_reqs": "required"})
