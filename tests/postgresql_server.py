"""A private PostgreSQL server for the tests, on its own port and data folder.

The server is Debian's (or any) PostgreSQL found through `pg_config --bindir`, the folders
under /usr/lib/postgresql, or `$STEPFLOW_TEST_PG_BIN`. It is started once per test session
with `initdb` and `pg_ctl`, as the `postgres` user when the tests run as root (the server
refuses root), and stopped at the end. Each test gets its own PostgreSQL schema in the one
database (`?schema=` in the URL), so tests never see each other's runs.

Without PostgreSQL the tests that need it skip with the reason; `.ci/run` sets
`STEPFLOW_TEST_REQUIRE_POSTGRESQL=1`, which turns that skip into a failure.

`pgbouncer` (a fixture) puts Debian's PgBouncer in front of it in transaction pooling mode
(no session state survives a transaction; no server-side prepared statements), with a
pool smaller than the number of clients.

Two roles: `stepflow` (trust, no password) and `secret_user`, whose password
(`SECRET_PASSWORD`) is checked with scram-sha-256 over TCP, for the tests that prove a
password never shows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

DATABASE = "stepflow_test"
SECRET_USER = "secret_user"
SECRET_PASSWORD = "s3cr3t-P@ss:/word"  # characters a careless parser would leak
REQUIRE = "STEPFLOW_TEST_REQUIRE_POSTGRESQL"


def _bindir() -> Path | None:
    explicit = os.environ.get("STEPFLOW_TEST_PG_BIN")
    candidates: list[Path] = [Path(explicit)] if explicit else []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            candidates.append(Path(out))
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = sorted(
            (p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )
        candidates.extend(p / "bin" for p in reversed(versions))
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One cluster: start, stop, restart, and an admin connection for the fault tests."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "socket"
        self.port = _free_port()
        self.host = "127.0.0.1"
        self._as_postgres = os.geteuid() == 0

    # ---- processes ------------------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        conf = self.data / "postgresql.conf"
        with open(conf, "a", encoding="utf-8") as f:
            f.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 120\nfsync = off\nsynchronous_commit = off\n"
                "full_page_writes = off\nshared_buffers = 64MB\n"
                "password_encryption = 'scram-sha-256'\n"
            )
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            f"host all {SECRET_USER} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n",
            encoding="utf-8",
        )

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-m",
            "fast",
            "-w",
            "restart",
        )

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    # ---- addresses ------------------------------------------------------------------------

    def url(
        self,
        *,
        schema: str | None = None,
        user: str = "stepflow",
        password: str | None = None,
        database: str = DATABASE,
    ) -> str:
        from urllib.parse import quote

        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        url = f"postgresql://{auth}@{self.host}:{self.port}/{database}"
        return url + (f"?schema={schema}" if schema else "")

    def admin(self, database: str = DATABASE) -> object:
        """A psycopg connection as the superuser, autocommit (imported here: optional)."""
        import psycopg

        return psycopg.connect(
            host=self.host, port=self.port, user="postgres", dbname=database, autocommit=True
        )

    def setup_roles(self) -> None:
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE ROLE stepflow LOGIN")
            conn.execute(f"CREATE ROLE {SECRET_USER} LOGIN PASSWORD '{SECRET_PASSWORD}'")
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER stepflow")
            conn.execute(f"GRANT ALL ON DATABASE {DATABASE} TO {SECRET_USER}")
        with psycopg.connect(
            host=self.host, port=self.port, user="postgres", dbname=DATABASE, autocommit=True
        ) as conn:
            conn.execute(f"GRANT CREATE ON SCHEMA public TO {SECRET_USER}")


def _missing(reason: str) -> None:
    """Skip, or fail where PostgreSQL is required (CI)."""
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"PostgreSQL is required here ({REQUIRE}=1) but {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests need a local PostgreSQL server: {reason}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing("psycopg is not installed (pip install -e '.[test,postgresql]')")
    bindir = _bindir()
    if bindir is None:
        _missing("no initdb/pg_ctl found (apt-get install postgresql)")
    assert bindir is not None
    base = Path(tempfile.mkdtemp(prefix="stepflow-pg-"))
    os.chmod(base, 0o755)
    server = PostgresServer(bindir, base / "cluster")
    try:
        server.init()
        server.start()
        server.setup_roles()
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        server.stop("immediate")
        _missing(f"the private server did not start: {detail.strip().splitlines()[-1:]}")
    try:
        yield server
    finally:
        if not server.running:  # a fault test left it down
            with contextlib.suppress(subprocess.SubprocessError):
                server.start()
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A URL of the test server with a schema of this test's own."""
    return postgres_server.url(schema=f"t_{uuid.uuid4().hex[:12]}")


def wait_until_accepting(server: PostgresServer, timeout: float = 30.0) -> None:
    """Block until the server takes connections again (after a restart)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(
                host=server.host,
                port=server.port,
                user="postgres",
                dbname="postgres",
                connect_timeout=2,
            ):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class PgBouncer:
    """PgBouncer in transaction pooling mode in front of the test server."""

    def __init__(self, server: PostgresServer, root: Path, pool_size: int) -> None:
        self.server = server
        self.root = root
        self.port = _free_port()
        self.pool_size = pool_size
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, *, schema: str | None = None) -> str:
        url = f"postgresql://stepflow@127.0.0.1:{self.port}/{DATABASE}"
        return url + (f"?schema={schema}" if schema else "")

    def start(self, binary: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        users = self.root / "users.txt"
        users.write_text('"stepflow" ""\n"postgres" ""\n', encoding="utf-8")
        ini = self.root / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{DATABASE} = host={self.server.host} port={self.server.port} dbname={DATABASE}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir = {self.root}\n"
            f"auth_type = trust\nauth_file = {users}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\nmax_client_conn = 500\n"
            f"logfile = {self.root / 'pgbouncer.log'}\npidfile = {self.root / 'pgbouncer.pid'}\n",
            encoding="utf-8",
        )
        command = [binary, str(ini)]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            shutil.chown(self.root, "postgres", "postgres")
            for path in (users, ini):
                shutil.chown(path, "postgres", "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        self._proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2, prepare_threshold=None):
                    return
            except psycopg.OperationalError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                    raise RuntimeError(f"PgBouncer did not start: {err.strip()[-300:]}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, 15)
            self._proc.wait(10)
        if self._proc.stderr is not None:
            self._proc.stderr.close()


@pytest.fixture(scope="session")
def pgbouncer(postgres_server: PostgresServer) -> Iterator[PgBouncer]:
    binary = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").is_file() else None
    )
    if binary is None:
        _missing("PgBouncer is not installed (apt-get install pgbouncer)")
    assert binary is not None
    bouncer = PgBouncer(postgres_server, postgres_server.root.parent / "pgbouncer", pool_size=4)
    try:
        bouncer.start(binary)
    except (OSError, RuntimeError) as exc:
        bouncer.stop()
        _missing(str(exc))
    try:
        yield bouncer
    finally:
        bouncer.stop()


def ensure_running(server: PostgresServer) -> None:
    """Start `server` again if a fault test left it down, and wait until it takes
    connections (a test's `finally`, so that the next test finds it as it was)."""
    if not server.running:
        server.start()
    wait_until_accepting(server)


@pytest.fixture(scope="module")
def private_postgres_server(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """A second cluster of the module's own (its own port and data folder, the same roles
    and database), for the tests that stop, restart or reconfigure a server: the session's
    shared one stays up for every other test."""
    base = Path(tempfile.mkdtemp(prefix="stepflow-pg-private-"))
    os.chmod(base, 0o755)
    server = PostgresServer(postgres_server.bindir, base / "cluster")
    try:
        server.init()
        server.start()
        server.setup_roles()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
