#!/usr/bin/env python3
"""The point-in-time recovery part of scripts/bench (issue 20): kho against pgBackRest on one
PostgreSQL cluster, the same WAL and the same data, on the same cores.

1. WAL archived per second. The cluster writes SEGMENTS WAL segments with archive_command empty
   (PostgreSQL keeps them and their .ready files), then stops: that data directory is the template.
   For each way of archiving, a copy of the template is started with archive_command still empty,
   the tool's repository is made, and the clock starts when archive_command is set and the server
   reloads its configuration (kho's agent is started on the clock too, since it pushes ahead); it
   stops when pg_wal/archive_status holds no .ready file, i.e. when PostgreSQL has heard "stored"
   for every segment. That is what a DBA waits for, through PostgreSQL's own archiver, and both
   tools see the same files in the same order.
2. Base backup time and repository growth: a copy of the template (its segments marked archived)
   archives into both repositories (kho's agent, then pgbackrest archive-push); kho backup
   --postgres-base and pgbackrest --type=full; scripts/bench-churn.sql (night 2) and a checkpoint;
   kho's second base backup and pgbackrest --type=incr. Bytes are the repository's growth without
   its WAL.
3. Restore to a point in time: night 3 of churn, a row 'before', the target time T, a row 'after',
   a segment switch; then kho restore --source S --to-data-directory DIR --at T --start, and
   pgbackrest restore --type=time --target=T --target-action=promote then pg_ctl start: the clock
   runs from the command until the server accepts connections and is promoted. Each restored
   cluster must hold 'before' and not 'after'.

Run by scripts/bench (root: the cluster runs as postgres through runuser, kho's agent as root).
"""

import argparse
import datetime
import json
import os
import platform
import pwd
import shutil
import signal
import subprocess
import sys
import time

MARKER_START = "<!-- scripts/bench --only pitr: latest run -->"
MARKER_END = "<!-- /scripts/bench --only pitr -->"
SOURCE = "pitr-bench"
SEGMENT = 16 * 1024 * 1024


def log(message):
    print(f"\033[1m==> {message}\033[0m", file=sys.stderr, flush=True)


def run(argv, env=None, check=True, capture=False, stdin=None):
    result = subprocess.run(argv, env=env, text=True, stdin=stdin,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if capture else None)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip() if capture else ""
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}{': ' + detail if detail else ''}")
    return result


def timed(argv, env=None):
    start = time.monotonic()
    run(argv, env=env, capture=True)
    return time.monotonic() - start


def memory():
    """The page cache's state when a restore starts: dirty data waits for whoever syncs it."""
    wanted = ("MemFree", "Cached", "Dirty", "Writeback")
    found = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            if key in wanted:
                found[key] = int(value.split()[0]) // 1024
    log("page cache (MiB): " + ", ".join(f"{k} {found.get(k, 0)}" for k in wanted))
    return found


def du_bytes(path, exclude=None):
    total = 0
    for folder, dirs, files in os.walk(path):
        if exclude and os.path.abspath(folder) == os.path.abspath(path):
            dirs[:] = [d for d in dirs if d != exclude]
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return total


class Cluster:
    """One PostgreSQL data directory, run as postgres, reached on 127.0.0.1:port."""

    def __init__(self, bench, data, port):
        self.bench, self.data, self.port = bench, data, port

    def as_postgres(self, argv, **kwargs):
        return run(["runuser", "-u", "postgres", "--"] + argv, **kwargs)

    def start(self, extra=""):
        self.as_postgres([self.bench.pg_ctl, "-D", self.data, "-l", self.data + "/server.log", "-w", "-t", "300",
                          "-o", f"-p {self.port} {extra}".strip(), "start"], capture=True)

    def stop(self):
        if os.path.exists(self.data + "/postmaster.pid"):
            self.as_postgres([self.bench.pg_ctl, "-D", self.data, "-m", "fast", "-w", "-t", "300", "stop"],
                             check=False, capture=True)

    def sql(self, text, db="postgres", **variables):
        argv = ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
                "-v", "ON_ERROR_STOP=1", "-q", "-X", "-At"]
        for key, value in variables.items():
            argv += ["-v", f"{key}={value}"]
        return run(argv + ["-c", text], capture=True).stdout.strip()

    def sql_file(self, path, db, **variables):
        argv = ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
                "-v", "ON_ERROR_STOP=1", "-q", "-X"]
        for key, value in variables.items():
            argv += ["-v", f"{key}={value}"]
        run(argv + ["-f", path], capture=True)

    def set_archive_command(self, command):
        # ALTER SYSTEM takes a literal: double the quotes of the command.
        self.sql("ALTER SYSTEM SET archive_command = '" + command.replace("'", "''") + "'")
        self.sql("SELECT pg_reload_conf()")

    def ready_files(self):
        folder = self.data + "/pg_wal/archive_status"
        return sorted(name for name in os.listdir(folder) if name.endswith(".ready"))

    def wait_archived(self, timeout):
        deadline = time.monotonic() + timeout
        while self.ready_files():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(self.ready_files())} WAL files still not archived after {timeout} s "
                                   f"(see {self.data}/server.log)")
            time.sleep(0.02)


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = os.path.join(args.work, "pitr")
        self.kho = args.kho
        self.pg_ctl = os.path.join(args.pgbin, "pg_ctl")
        self.initdb = os.path.join(args.pgbin, "initdb")
        self.port = args.port
        self.results = {}
        self.agents = []
        self.clusters = []
        postgres = pwd.getpwnam("postgres")
        self.pg_uid, self.pg_gid = postgres.pw_uid, postgres.pw_gid
        self.password_file = os.path.join(self.work, "kho.pass")

    # --- set-up -----------------------------------------------------------------------------

    def chown_postgres(self, path):
        for folder, dirs, files in os.walk(path):
            os.chown(folder, self.pg_uid, self.pg_gid)
            for name in files:
                os.lchown(os.path.join(folder, name), self.pg_uid, self.pg_gid)

    def kho_env(self, repo):
        env = {k: v for k, v in os.environ.items() if not k.startswith("KHO_")}
        env.update(KHO_REPOSITORY=repo, KHO_PASSWORD_FILE=self.password_file, KHO_STATE_DIR=self.work + "/kho-state")
        return env

    def kho_init(self, repo):
        run([self.kho, "init"], env=self.kho_env(repo), capture=True)

    def pgbackrest_conf(self, name, repo, data, port, asynchronous):
        """A configuration of its own per run: repository, spool, lock and log folders of postgres."""
        for folder in (repo, f"{self.work}/pgbr-{name}-spool", f"{self.work}/pgbr-{name}-lock", f"{self.work}/pgbr-{name}-log"):
            os.makedirs(folder, exist_ok=True)
            os.chown(folder, self.pg_uid, self.pg_gid)
        path = f"{self.work}/pgbr-{name}.conf"
        with open(path, "w") as f:
            f.write(f"""[global]
repo1-path={repo}
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-cipher-passphrase-{name}
repo1-bundle=y
# Block incremental is marked beta in 2.45 and needs beta=y.
repo1-block=y
beta=y
repo1-retention-full=9
compress-type=zst
compress-level=3
start-fast=y
process-max={self.args.pgbackrest_processes}
archive-async={'y' if asynchronous else 'n'}
spool-path={self.work}/pgbr-{name}-spool
lock-path={self.work}/pgbr-{name}-lock
log-path={self.work}/pgbr-{name}-log
log-level-console=warn
log-level-file=off

[{SOURCE}]
pg1-path={data}
pg1-port={port}
pg1-socket-path=/tmp
""")
        os.chmod(path, 0o640)
        os.chown(path, 0, self.pg_gid)
        return path

    def pgbackrest(self, conf, *argv):
        return ["runuser", "-u", "postgres", "--", "pgbackrest", f"--config={conf}", f"--stanza={SOURCE}"] + list(argv)

    def make_template(self):
        """A cluster that loaded the agency database and wrote SEGMENTS segments, none archived."""
        template = os.path.join(self.work, "template")
        os.makedirs(template)
        os.chown(template, self.pg_uid, self.pg_gid)
        run(["runuser", "-u", "postgres", "--", self.initdb, "-D", template, "-A", "trust", "-E", "UTF8",
             "--locale=C.UTF-8", "-U", "postgres"], capture=True)
        # A production-like cluster (fsync and full-page writes on) whose WAL accumulates: with
        # archive_mode on and archive_command empty, PostgreSQL keeps every segment marked .ready.
        with open(template + "/postgresql.conf", "a") as f:
            f.write(f"""
# scripts/bench-pitr.py
listen_addresses = '127.0.0.1'
unix_socket_directories = '/tmp'
port = {self.port}
wal_level = replica
archive_mode = on
archive_command = ''
max_wal_size = 8GB
min_wal_size = 1GB
checkpoint_timeout = 1h
shared_buffers = 256MB
autovacuum = off
jit = off
""")
        cluster = Cluster(self, template, self.port)
        self.clusters.append(cluster)
        cluster.start()
        cluster.sql("CREATE DATABASE agency")
        cluster.sql_file(os.path.join(self.args.root, "scripts/bench-data.sql"), "agency", scale=self.args.scale)
        cluster.sql("CHECKPOINT")
        # Then more writes until SEGMENTS segments are full: rows of random hex text (about half
        # compressible, like a table of text data), in the agency database.
        cluster.sql("CREATE TABLE wal_load (id bigint, at timestamptz, body text)", db="agency")
        start_lsn = cluster.sql("SELECT '0/0'::pg_lsn")
        target = self.args.segments * SEGMENT
        while True:
            written = int(float(cluster.sql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start_lsn}')")))
            if written >= target:
                break
            cluster.sql("INSERT INTO wal_load SELECT g, now(), md5(g::text || random()::text) || "
                        "repeat(md5(random()::text), 3) || repeat('x', 40) FROM generate_series(1, 50000) g", db="agency")
        cluster.sql("SELECT pg_switch_wal()")
        cluster.sql("CHECKPOINT")
        cluster.stop()
        self.clusters.remove(cluster)
        ready = Cluster(self, template, self.port).ready_files()
        self.template = template
        self.results["segments"] = len(ready)
        self.results["wal_bytes"] = len(ready) * SEGMENT
        self.results["data_bytes"] = du_bytes(template, exclude="pg_wal")
        log(f"template: {len(ready)} segments ready ({len(ready) * 16} MiB), data directory "
            f"{self.results['data_bytes'] / 1e6:.0f} MB without pg_wal")

    def copy_template(self, name):
        target = os.path.join(self.work, name)
        run(["cp", "-a", self.template, target])
        return Cluster(self, target, self.port + 1)

    def start_agent(self, repo, data, name):
        state = f"{self.work}/kho-state/{name}"
        os.makedirs(state, exist_ok=True)
        os.chmod(state, 0o700)
        log_file = open(f"{self.work}/agent-{name}.log", "w")
        agent = subprocess.Popen([self.kho, "wal", "serve", "--source", SOURCE, "--data-directory", data,
                                  "--state-directory", state], env=self.kho_env(repo),
                                 stdout=log_file, stderr=subprocess.STDOUT)
        self.agents.append(agent)
        return agent

    def stop_agent(self, agent):
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(60)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        self.agents.remove(agent)

    def wait_agent_socket(self, agent, timeout=30):
        socket = f"/run/kho/wal/{SOURCE}.sock"
        deadline = time.monotonic() + timeout
        while not os.path.exists(socket):
            if agent.poll() is not None:
                raise RuntimeError(f"kho wal serve exited {agent.returncode} (see {self.work}/agent-*.log)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"kho wal serve made no socket at {socket} in {timeout} s")
            time.sleep(0.01)

    # --- 1. WAL archived per second ---------------------------------------------------------

    def archive_run(self, mode):
        log(f"archiving {self.results['segments']} segments: {mode}")
        cluster = self.copy_template(f"archive-{mode}")
        self.clusters.append(cluster)
        repo = os.path.join(self.work, f"repo-{mode}")
        agent = None
        cluster.start()
        try:
            if mode.startswith("kho"):
                self.kho_init(repo)
                if mode == "kho-direct":
                    # archive_command runs as postgres: it needs the repository and a key. As the
                    # README sets it up: a key secret of its own (no scrypt per push), readable by
                    # postgres only.
                    secret = f"{self.work}/wal-{mode}.secret"
                    run([self.kho, "key", "add", "--label", "wal push", "--secret-to", secret, "--owner", "postgres"],
                        env=self.kho_env(repo), capture=True)
                    self.chown_postgres(repo)
                    env_file = f"{self.work}/wal-{mode}.env"
                    with open(env_file, "w") as f:
                        f.write(f"KHO_REPOSITORY={repo}\nKHO_PASSWORD_FILE={secret}\n")
                    os.chmod(env_file, 0o640)
                    os.chown(env_file, 0, self.pg_gid)
                    command = f"set -a && . {env_file} && exec {self.kho} wal push --direct --source {SOURCE} %p"
                else:
                    command = f"{self.kho} wal push --source {SOURCE} %p"
            else:
                conf = self.pgbackrest_conf(mode, repo, cluster.data, cluster.port, asynchronous=(mode == "pgbackrest-async"))
                run(self.pgbackrest(conf, "stanza-create"), capture=True)
                command = f"pgbackrest --config={conf} --stanza={SOURCE} archive-push %p"
            start = time.monotonic()
            if mode == "kho-agent":
                agent = self.start_agent(repo, cluster.data, mode)
                self.wait_agent_socket(agent)
            cluster.set_archive_command(command)
            cluster.wait_archived(timeout=3600)
            seconds = time.monotonic() - start
        finally:
            cluster.stop()
            self.clusters.remove(cluster)
            if agent:
                self.stop_agent(agent)
        stored = du_bytes(repo)
        self.results[f"archive_{mode}_seconds"] = seconds
        self.results[f"archive_{mode}_bytes"] = stored
        log(f"{mode}: {seconds:.1f} s, {self.results['segments'] / seconds:.1f} segments/s, repository {stored / 1e6:.0f} MB")
        shutil.rmtree(cluster.data)
        shutil.rmtree(repo)

    # --- 2. and 3. base backups, churn, restore to a point in time ----------------------------

    def base_and_restore(self):
        cluster = self.copy_template("primary")
        self.clusters.append(cluster)
        # The template's segments count as archived here: both archives start at the first backup.
        status = cluster.data + "/pg_wal/archive_status"
        for name in os.listdir(status):
            if name.endswith(".ready"):
                os.rename(f"{status}/{name}", f"{status}/{name[:-6]}.done")
        cluster.start()
        kho_repo = os.path.join(self.work, "repo-kho")
        pgbr_repo = os.path.join(self.work, "repo-pgbackrest")
        self.kho_init(kho_repo)
        agent = self.start_agent(kho_repo, cluster.data, "primary")
        self.wait_agent_socket(agent)
        conf = self.pgbackrest_conf("primary", pgbr_repo, cluster.data, cluster.port, asynchronous=False)
        run(self.pgbackrest(conf, "stanza-create"), capture=True)
        # Both archives get every segment from here on, through the one archive_command.
        cluster.set_archive_command(f"{self.kho} wal push --source {SOURCE} %p && "
                                    f"pgbackrest --config={conf} --stanza={SOURCE} archive-push %p")
        kho_env = self.kho_env(kho_repo)
        url = f"postgres://postgres@127.0.0.1:{cluster.port}"

        def kho_base():
            # kho's default compression (zstd 1): at pgBackRest's level 3, kho's 128 KiB blocks
            # came out 4-5 % larger and the backup slower (docs/BENCHMARKS.md).
            return timed([self.kho, "backup", "--postgres-base", url, "--source-name", SOURCE,
                          "--checkpoint", "fast"], env=kho_env)

        def pgbr_base(kind):
            return timed(self.pgbackrest(conf, "backup", f"--type={kind}"))

        def grown():
            return du_bytes(kho_repo, exclude="wal"), du_bytes(pgbr_repo, exclude="archive")

        def warm():
            # The data directory in the page cache for both tools alike.
            run(["sh", "-c", f"find {cluster.data} -type f -exec cat {{}} + > /dev/null"])

        try:
            before = grown()
            warm()
            self.results["base_full_kho_seconds"] = kho_base()
            warm()
            self.results["base_full_pgbackrest_seconds"] = pgbr_base("full")
            after = grown()
            self.results["base_full_kho_bytes"] = after[0] - before[0]
            self.results["base_full_pgbackrest_bytes"] = after[1] - before[1]
            log(f"full: kho {self.results['base_full_kho_seconds']:.1f} s {self.results['base_full_kho_bytes'] / 1e6:.1f} MB, "
                f"pgbackrest {self.results['base_full_pgbackrest_seconds']:.1f} s {self.results['base_full_pgbackrest_bytes'] / 1e6:.1f} MB")

            churn = os.path.join(self.args.root, "scripts/bench-churn.sql")
            cluster.sql_file(churn, "agency", scale=self.args.scale, night=2)
            cluster.sql("CHECKPOINT")
            self.results["data_after_churn_bytes"] = du_bytes(cluster.data, exclude="pg_wal")
            before = grown()
            warm()
            self.results["base_incr_kho_seconds"] = kho_base()
            warm()
            self.results["base_incr_pgbackrest_seconds"] = pgbr_base("incr")
            after = grown()
            self.results["base_incr_kho_bytes"] = after[0] - before[0]
            self.results["base_incr_pgbackrest_bytes"] = after[1] - before[1]
            log(f"after churn: kho {self.results['base_incr_kho_seconds']:.1f} s {self.results['base_incr_kho_bytes'] / 1e6:.1f} MB, "
                f"pgbackrest {self.results['base_incr_pgbackrest_seconds']:.1f} s {self.results['base_incr_pgbackrest_bytes'] / 1e6:.1f} MB")

            # WAL to replay after the base backup: another night, then the target between two rows.
            wal_start = cluster.sql("SELECT pg_current_wal_lsn()")
            cluster.sql_file(churn, "agency", scale=self.args.scale, night=3)
            cluster.sql("CREATE TABLE pitr_marker (label text)", db="agency")
            cluster.sql("INSERT INTO pitr_marker VALUES ('before')", db="agency")
            time.sleep(1.2)
            target = cluster.sql("SELECT to_char(date_trunc('second', now()) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')")
            time.sleep(1.2)
            cluster.sql("INSERT INTO pitr_marker VALUES ('after')", db="agency")
            self.results["replay_bytes"] = int(float(cluster.sql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{wal_start}')")))
            cluster.sql("SELECT pg_switch_wal()")
            cluster.wait_archived(timeout=600)
            self.results["target"] = target + " UTC"
            log(f"target {target} UTC, {self.results['replay_bytes'] / 1e6:.0f} MB of WAL after the last base backup")
        finally:
            cluster.stop()
            self.clusters.remove(cluster)
            self.stop_agent(agent)

        # Restores: the source cluster is stopped, so nothing else runs beside them. Each tool
        # restores twice, in the order kho, pgBackRest, pgBackRest, kho, so that neither is always
        # the first after the load (the page cache's writeback of it) nor always the second; the
        # figures are the means.
        def restore_kho(round):
            data = os.path.join(self.work, f"restored-kho-{round}")
            self.results[f"restore_kho_memory_{round}"] = memory()
            start = time.monotonic()
            profile = os.environ.get("BENCH_PITR_PERF")
            wrap = ["perf", "record", "-a", "-g", "-q", "-o", f"{profile}-{round}"] if profile else []
            answer = run(wrap + [self.kho, "restore", "--source", SOURCE, "--to-data-directory", data, "--at", target,
                                 "--time-zone", "UTC", "--start", "--port", str(self.port + 2), "--yes", "--json"],
                         env=kho_env, capture=True)
            result = json.loads(answer.stdout)
            restored = Cluster(self, data, self.port + 2)
            self.clusters.append(restored)
            self.wait_promoted(restored)
            seconds = time.monotonic() - start
            self.check_restored(restored, "kho")
            return seconds, result["filesSeconds"], result["walFilesServed"]

        def restore_pgbackrest(round):
            data = os.path.join(self.work, f"restored-pgbackrest-{round}")
            os.makedirs(data, mode=0o700)
            os.chown(data, self.pg_uid, self.pg_gid)
            self.results[f"restore_pgbackrest_memory_{round}"] = memory()
            start = time.monotonic()
            run(self.pgbackrest(conf, "restore", "--type=time", f"--target={target}+00", "--target-action=promote",
                                f"--pg1-path={data}"))
            files = time.monotonic() - start
            restored = Cluster(self, data, self.port + 3)
            self.clusters.append(restored)
            # As kho does for its copy: the restored cluster must not archive into its original's archive.
            restored.start("-c archive_mode=off")
            self.wait_promoted(restored)
            seconds = time.monotonic() - start
            with open(data + "/server.log") as f:
                fetched = sum(1 for line in f if "restored log file" in line)
            self.check_restored(restored, "pgbackrest")
            return seconds, files, fetched

        runs = {"kho": [], "pgbackrest": []}
        for round, tool in enumerate(("kho", "pgbackrest", "pgbackrest", "kho")):
            outcome = restore_kho(round) if tool == "kho" else restore_pgbackrest(round)
            runs[tool].append(outcome)
            log(f"restore {round + 1} of 4, {tool}: {outcome[0]:.1f} s (files {outcome[1]:.1f} s, {outcome[2]} WAL files fetched)")
        for tool, outcomes in runs.items():
            self.results[f"restore_{tool}_runs"] = [o[0] for o in outcomes]
            self.results[f"restore_{tool}_seconds"] = sum(o[0] for o in outcomes) / len(outcomes)
            self.results[f"restore_{tool}_files_seconds"] = sum(o[1] for o in outcomes) / len(outcomes)
            self.results[f"restore_{tool}_wal_files"] = outcomes[0][2]
        log(f"restore to {target}: kho {self.results['restore_kho_seconds']:.1f} s, "
            f"pgbackrest {self.results['restore_pgbackrest_seconds']:.1f} s (means of two)")

    def wait_promoted(self, cluster, timeout=3600):
        deadline = time.monotonic() + timeout
        while True:
            ready = run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(cluster.port)], check=False).returncode == 0
            if ready and cluster.sql("SELECT pg_is_in_recovery()") == "f":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cluster.data} not promoted after {timeout} s")
            time.sleep(0.02)

    def check_restored(self, cluster, tool):
        labels = cluster.sql("SELECT string_agg(label, ',' ORDER BY label) FROM pitr_marker", db="agency")
        if labels != "before":
            raise RuntimeError(f"the cluster restored by {tool} holds {labels!r} in pitr_marker, not 'before'")
        cluster.stop()
        self.clusters.remove(cluster)

    def cleanup(self):
        for agent in list(self.agents):
            self.stop_agent(agent)
        for cluster in list(self.clusters):
            cluster.stop()

    def run(self):
        if os.path.exists(self.work):
            shutil.rmtree(self.work)
        os.makedirs(self.work)
        os.chmod(self.work, 0o755)
        with open(self.password_file, "w") as f:
            f.write("bench-password-pitr\n")
        os.chmod(self.password_file, 0o600)
        os.chown(self.password_file, self.pg_uid, self.pg_gid)
        self.started = time.time()
        try:
            self.make_template()
            for mode in ("kho-direct", "pgbackrest-sync", "kho-agent", "pgbackrest-async"):
                self.archive_run(mode)
            self.base_and_restore()
        finally:
            self.cleanup()
        self.results["minutes"] = (time.time() - self.started) / 60


# --- the report ------------------------------------------------------------------------------

def first_line(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def verdict(kho, other, lower_is_better=True, band=0.05):
    """Ahead or behind only outside the band: 5 % for times, which move by that much between runs
    on one machine; 1 % for bytes (`bytes_verdict`), which are the same from run to run."""
    if kho is None or other is None or other == 0 or kho == 0:
        return "-"
    ratio = kho / other if lower_is_better else other / kho
    return f"{ratio:.2f}×: kho {'ahead' if ratio < 1 - band else 'behind' if ratio > 1 + band else 'even'}"


def bytes_verdict(kho, other):
    return verdict(kho, other, band=0.01)


def report(bench, args):
    r = bench.results
    segments = r["segments"]
    mb = lambda value: f"{value / 1e6:.1f} MB"
    rate = lambda key: f"{segments / r[key]:.1f}/s ({r[key]:.1f} s)"
    now = datetime.datetime.now(datetime.timezone.utc).astimezone()
    cpu = first_line(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"])
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    pgbackrest = first_line(["pgbackrest", "version"]).split()[-1]
    lines = [
        f"Latest run: {now:%Y-%m-%d %H:%M %Z}{' (quick mode, not a real measurement)' if args.quick == '1' else ''}, "
        f"kho {args.kho_rev}, pgBackRest {pgbackrest}, PostgreSQL {args.pg_version}, {os.cpu_count()} cores ({cpu}), "
        f"{platform.system()} {platform.release()}; load average {args.load_start} at the start of scripts/bench, "
        f"{load_after} after this part; the part took {r['minutes']:.1f} min.",
        "",
        f"Data: the agency database at scale {args.scale} and the table the WAL load wrote ({mb(r['data_bytes'])} of data "
        f"directory without pg_wal), {segments} WAL segments of 16 MiB to archive (the load, then rows of random hex text), "
        f"{mb(r['replay_bytes'])} of WAL to replay after the last base backup (night 3 of churn).",
        "",
        "| figure | kho | pgBackRest | kho / pgBackRest |",
        "| --- | ---: | ---: | --- |",
        f"| WAL archived per second, one process per file (kho `wal push --direct`, pgBackRest sync `archive-push`) | "
        f"{rate('archive_kho-direct_seconds')} | {rate('archive_pgbackrest-sync_seconds')} | "
        f"{verdict(r['archive_kho-direct_seconds'], r['archive_pgbackrest-sync_seconds'])} |",
        f"| WAL archived per second, ahead of the archiver (kho agent, 2 connections; pgBackRest `archive-async`, `process-max=2`) | "
        f"{rate('archive_kho-agent_seconds')} | {rate('archive_pgbackrest-async_seconds')} | "
        f"{verdict(r['archive_kho-agent_seconds'], r['archive_pgbackrest-async_seconds'])} |",
        f"| archive size, {segments} segments ({segments * 16} MiB) | {mb(r['archive_kho-agent_bytes'])} | "
        f"{mb(r['archive_pgbackrest-async_bytes'])} | {bytes_verdict(r['archive_kho-agent_bytes'], r['archive_pgbackrest-async_bytes'])} |",
        f"| first base backup, time | {r['base_full_kho_seconds']:.1f} s | {r['base_full_pgbackrest_seconds']:.1f} s | "
        f"{verdict(r['base_full_kho_seconds'], r['base_full_pgbackrest_seconds'])} |",
        f"| first base backup, added to the repository | {mb(r['base_full_kho_bytes'])} | {mb(r['base_full_pgbackrest_bytes'])} | "
        f"{bytes_verdict(r['base_full_kho_bytes'], r['base_full_pgbackrest_bytes'])} |",
        f"| base backup after a night of churn (pgBackRest `--type=incr`), time | {r['base_incr_kho_seconds']:.1f} s | "
        f"{r['base_incr_pgbackrest_seconds']:.1f} s | {verdict(r['base_incr_kho_seconds'], r['base_incr_pgbackrest_seconds'])} |",
        f"| base backup after a night of churn, added to the repository | {mb(r['base_incr_kho_bytes'])} | "
        f"{mb(r['base_incr_pgbackrest_bytes'])} | {bytes_verdict(r['base_incr_kho_bytes'], r['base_incr_pgbackrest_bytes'])} |",
        f"| restore to a point in time until promoted and accepting connections (mean of two runs: "
        f"{', '.join(f'{x:.1f}' for x in r['restore_kho_runs'])} s; {', '.join(f'{x:.1f}' for x in r['restore_pgbackrest_runs'])} s) | "
        f"{r['restore_kho_seconds']:.1f} s | "
        f"{r['restore_pgbackrest_seconds']:.1f} s | {verdict(r['restore_kho_seconds'], r['restore_pgbackrest_seconds'])} |",
        f"| of which the files of the base backup (then recovery, promotion) | {r['restore_kho_files_seconds']:.1f} s | "
        f"{r['restore_pgbackrest_files_seconds']:.1f} s | {verdict(r['restore_kho_files_seconds'], r['restore_pgbackrest_files_seconds'])} |",
        f"| WAL files fetched by the recovery (each tool restores its own newest base backup before T) | "
        f"{r['restore_kho_wal_files']} | {r['restore_pgbackrest_wal_files']} | - |",
    ]
    return "\n".join(lines)


def write_doc(section, root):
    path = os.path.join(root, "docs", "BENCHMARKS.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = text.find(MARKER_START), text.find(MARKER_END)
    if start < 0 or end < start:
        log(f"{path} has no {MARKER_START} … {MARKER_END} block: not written")
        return
    text = text[:start + len(MARKER_START)] + "\n" + section + "\n" + text[end:]
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    log(f"wrote the PITR block of {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--kho", required=True)
    parser.add_argument("--kho-rev", default="?")
    parser.add_argument("--pgbin", required=True)
    parser.add_argument("--pg-version", default="?")
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, required=True, help="the first of four free ports")
    parser.add_argument("--scale", default="0.25")
    parser.add_argument("--segments", type=int, default=128)
    parser.add_argument("--pgbackrest-processes", type=int, default=2)
    parser.add_argument("--load-start", default="")
    parser.add_argument("--quick", default="0")
    parser.add_argument("--write-doc", default="0")
    args = parser.parse_args()

    bench = Bench(args)
    bench.run()
    section = report(bench, args)
    print()
    print(section)
    with open(os.path.join(args.work, "pitr-results.json"), "w") as f:
        json.dump(bench.results, f, indent=1)
    if args.write_doc == "1":
        write_doc(section, args.root)
    else:
        log("docs/BENCHMARKS.md not written (BENCH_WRITE=1 writes it)")


if __name__ == "__main__":
    main()
