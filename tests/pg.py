"""A throwaway PostgreSQL cluster on 127.0.0.1 for storage tests and the records benchmark.

initdb into a temporary directory, pg_ctl start on a free port with the socket in that directory,
stop and delete at the end. Never touches a system cluster; when running as root it runs the server
as the 'postgres' user through runuser (initdb refuses root).
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

APT_HINT = "apt-get install -y postgresql  (provides initdb and pg_ctl under /usr/lib/postgresql/*/bin)"


class PostgresUnavailable(RuntimeError):
    pass


def find_pg_bin() -> Path | None:
    """Directory holding initdb and pg_ctl: PATH first, then /usr/lib/postgresql/<newest>/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
                    reverse=True):
        if os.path.exists(os.path.join(d, "initdb")) and os.path.exists(os.path.join(d, "pg_ctl")):
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TemporaryPostgres:
    """Context manager: `with TemporaryPostgres() as pg: pg.url_for("db")`.

    durable=False adds `-F` (fsync off) for fast tests; the benchmark uses durable=True.
    """

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.bin = find_pg_bin()
        if self.bin is None:
            raise PostgresUnavailable(f"initdb/pg_ctl not found; install PostgreSQL: {APT_HINT}")
        self.as_root = os.geteuid() == 0
        self.port = _free_port()
        self.user = "orconsole"
        self.tmp = Path(tempfile.mkdtemp(prefix="orconsole-pg-"))
        self.data = self.tmp / "data"
        self.log = self.tmp / "server.log"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresUnavailable(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}\n{log}")
        return proc

    def start(self) -> "TemporaryPostgres":
        if self.as_root:
            shutil.chown(self.tmp, user="postgres", group="postgres")
        os.chmod(self.tmp, 0o700)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8",
                  "--no-locale")
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.tmp}" + ("" if self.durable else " -F")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            if self.data.exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server but keep its data (a database outage): `pg_ctl stop -m fast` disconnects every
        client and shuts down; `start_server()` brings the same cluster back on the same port."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def start_server(self) -> None:
        """Start the cluster again after `stop_server()` (same data, port and socket directory)."""
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.tmp}" + ("" if self.durable else " -F")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")

    def is_running(self) -> bool:
        """`pg_ctl status`: True while a postmaster serves this data directory."""
        cmd = [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).returncode == 0

    def url_for(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def __enter__(self) -> "TemporaryPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
