#!/usr/bin/env python3
"""The measuring half of scripts/bench: runs kho, restic and Borg on the dumps and the tree that
scripts/bench prepared, interleaved and repeated, and reports medians and ratios. Then (unless
--s3 0) kho into an S3 repository on moto's S3 server on loopback against kho into a local folder,
on the first dump and the tree, interleaved the same way (`--only s3` runs only that part).

Standard library only. Called by scripts/bench; not meant to be run alone.
"""

import argparse
import datetime
import filecmp
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

TOOLS = ["kho", "restic", "borg"]
DUMPS = 3

# (key, label, unit, target of kho/restic or None)
STEPS = [
    ("backup_dump1", "backup of dump 1 (all data new)", "s", 0.40),
    ("backup_dump2", "backup of dump 2 (night 1 of churn)", "s", 0.40),
    ("backup_dump3", "backup of dump 3 (night 2 of churn)", "s", 0.40),
    ("restore_dump", "restore of dump 3", "s", 0.50),
    ("backup_tree1", "first tree backup", "s", 0.50),
    ("backup_tree2", "second tree backup, nothing changed", "s", 0.50),
    ("restore_tree", "tree restore", "s", 0.50),
    ("check", "check, reading all data", "s", 0.50),
]
SIZES = [
    ("size_dump1", "repository after dump 1", None),
    ("size_dump2", "repository after dump 2", None),
    ("size_dump3", "repository after the three dumps", 1.00),
    ("size_tree1", "repository after tree backup 1", None),
    ("size_tree2", "repository after tree backup 2", None),
]
RSS_TARGET = 1.00

# The S3 part: kho into an S3 repository (moto on loopback) against kho into a local folder.
# (key, label); each is run by both, and the target is S3 time / local time.
S3_STEPS = [
    ("backup_dump1", "backup of dump 1 (all data new)"),
    ("restore_dump1", "restore of dump 1"),
    ("backup_tree1", "first tree backup"),
    ("restore_tree1", "tree restore"),
]
S3_TARGET = 1.50
S3_BUCKET = "kho-bench"
S3_MARKER_START = "<!-- scripts/bench --only s3: latest run -->"
S3_MARKER_END = "<!-- /scripts/bench --only s3 -->"


class StepFailed(Exception):
    pass


def log(message):
    print(f"\033[1m==> {message}\033[0m", file=sys.stderr, flush=True)


def cpu_busy_seconds():
    """Seconds of CPU the whole machine spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def du_bytes(path):
    out = subprocess.run(["du", "-sb", path], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


def first_line(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


class Tool:
    """One tool's commands; every command is given a fresh environment for one repository."""

    def __init__(self, name, bench, rep):
        self.name = name
        self.bench = bench
        base = os.path.join(bench.work, f"rep{rep + 1}-{name}")
        self.repo = os.path.join(base, "repository")
        self.cache = os.path.join(base, "cache")
        self.base = base
        env = dict(os.environ)
        for key in list(env):
            if key.startswith(("KHO_", "RESTIC_", "BORG_")):
                del env[key]
        password = "bench-password-" + name
        if name.startswith("kho"):
            env.update(KHO_REPOSITORY=self.repo, KHO_PASSWORD=password)
        elif name == "restic":
            env.update(RESTIC_REPOSITORY=self.repo, RESTIC_PASSWORD=password, RESTIC_CACHE_DIR=self.cache)
        else:
            env.update(BORG_REPO=self.repo, BORG_PASSPHRASE=password, BORG_BASE_DIR=self.cache,
                       BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                       BORG_DISPLAY_PASSPHRASE="no")
        self.env = env

    def command(self, table):
        """This tool's row of `table`; the baseline kho runs kho's commands with its own binary."""
        if self.name == "kho-base":
            argv = table["kho"]
            return [self.bench.baseline] + argv[1:]
        return table[self.name]

    def init(self):
        return self.command({
            "kho": [self.bench.kho, "init"],
            "restic": ["restic", "init", "--repository-version", "2"],
            "borg": ["borg", "init", "--encryption", "repokey-blake2"],
        })

    def backup_stdin(self, n):
        return self.command({
            "kho": [self.bench.kho, "backup", "--stdin", "--stdin-name", "db.sql"],
            "restic": ["restic", "backup", "--stdin", "--stdin-filename", "db.sql"],
            "borg": ["borg", "create", "--compression", "zstd,3", "--stdin-name", "db.sql", f"::dump{n}", "-"],
        })

    def backup_tree(self, n):
        tree = self.bench.tree
        return self.command({
            "kho": [self.bench.kho, "backup", tree],
            "restic": ["restic", "backup", tree],
            "borg": ["borg", "create", "--compression", "zstd,3", f"::tree{n}", tree],
        })

    def restore_latest(self, target, archive):
        """The newest snapshot into target (a new folder, also the working folder for Borg)."""
        return self.command({
            "kho": [self.bench.kho, "restore", "latest", "--target", target],
            "restic": ["restic", "restore", "latest", "--target", target],
            "borg": ["borg", "extract", f"::{archive}"],
        })

    def check(self):
        return self.command({
            "kho": [self.bench.kho, "check", "--read-data"],
            "restic": ["restic", "check", "--read-data"],
            "borg": ["borg", "check", "--verify-data"],
        })


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        self.kho = args.kho
        self.baseline = args.baseline
        self.tree = os.path.join(args.work, "tree")
        self.dumps = [os.path.join(args.work, "dumps", f"dump{n}.sql") for n in range(1, DUMPS + 1)]
        self.logs = os.path.join(args.work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        # results[tool][figure] -> list of values (one per repetition)
        self.results = {tool: {} for tool in TOOLS}
        self.errors = []

    def record(self, tool, key, value):
        self.results.setdefault(tool, {}).setdefault(key, []).append(value)

    def timed(self, tool, rep, key, argv, stdin_path=None, cwd=None, warm=None):
        """Runs one command under /usr/bin/time; returns wall seconds, records time, RSS and CPU.
        `warm`: a file or folder read through first, so that every tool finds its input in the page
        cache (Borg drops the pages of every file it reads, POSIX_FADV_DONTNEED: without this the
        tool after Borg read the tree from disk)."""
        for path in [warm or stdin_path] if (warm or stdin_path) else []:
            read_through(path)
        subprocess.run(["sync"], check=True)  # the previous command's writeback is not charged to this one
        timing = os.path.join(self.logs, f"rep{rep + 1}-{tool.name}-{key}.time")
        output = os.path.join(self.logs, f"rep{rep + 1}-{tool.name}-{key}.log")
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
        with open(output, "wb") as out:
            start = time.monotonic()
            status = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", timing, *argv],
                                    stdin=stdin, stdout=out, stderr=subprocess.STDOUT, env=tool.env, cwd=cwd).returncode
            wall = time.monotonic() - start
        if stdin_path:
            stdin.close()
        if status != 0:
            with open(output, "rb") as f:
                tail = f.read()[-3000:].decode("utf-8", "replace")
            raise StepFailed(f"{tool.name} {key} (repetition {rep + 1}) exited with status {status}: "
                             f"{' '.join(argv)}\n{tail}")
        with open(timing) as f:
            fields = f.read().split()[-4:]
        _, user, system, rss_kib = fields
        self.record(tool.name, key, wall)
        self.record(tool.name, "cpu_" + key, float(user) + float(system))
        self.record(tool.name, "sys_" + key, float(system))
        self.record(tool.name, "rss_" + key, int(rss_kib) * 1024)
        log(f"  {tool.name:6} {key:13} {wall:7.2f} s  cpu {float(user) + float(system):7.2f} s (sys {float(system):6.2f})  "
            f"peak {int(rss_kib) / 1024:7.1f} MiB")
        return wall

    def size(self, tool, key):
        value = du_bytes(tool.repo)
        self.record(tool.name, key, value)
        log(f"  {tool.name:6} {key:13} {value / 1e6:9.1f} MB")

    def steps(self, tool, rep):
        """One repetition of one tool, as a list of (label, action); each action runs one step."""

        def backup_dump(n):
            def action():
                self.timed(tool, rep, f"backup_dump{n}", tool.backup_stdin(n), stdin_path=self.dumps[n - 1])
                self.size(tool, f"size_dump{n}")
            return action

        def restore_dump():
            target = os.path.join(tool.base, "restore-dump")
            os.makedirs(target)
            self.timed(tool, rep, "restore_dump", tool.restore_latest(target, f"dump{DUMPS}"), cwd=target)
            restored = os.path.join(target, "db.sql")
            if not os.path.exists(restored) or not filecmp.cmp(restored, self.dumps[-1], shallow=False):
                raise StepFailed(f"{tool.name}: the restored dump {restored} differs from {self.dumps[-1]}")
            shutil.rmtree(target)

        def backup_tree(n):
            def action():
                self.timed(tool, rep, f"backup_tree{n}", tool.backup_tree(n), warm=self.tree)
                self.size(tool, f"size_tree{n}")
            return action

        def restore_tree():
            target = os.path.join(tool.base, "restore-tree")
            os.makedirs(target)
            self.timed(tool, rep, "restore_tree", tool.restore_latest(target, "tree2"), cwd=target)
            restored = os.path.join(target, self.tree.lstrip("/"))
            if rep == 0 or self.args.verify_all:
                diff = subprocess.run(["diff", "-r", "--no-dereference", "-q", self.tree, restored],
                                      capture_output=True, text=True)
                if diff.returncode != 0:
                    raise StepFailed(f"{tool.name}: the restored tree {restored} differs from {self.tree}:\n"
                                     + "\n".join(diff.stdout.splitlines()[:20]) + diff.stderr)
                log(f"  {tool.name:6} restored tree identical to the original (diff -r)")
            set_aside(self.args.work, target, f"{tool.name}-{rep}")

        def check():
            self.timed(tool, rep, "check", tool.check())

        return [backup_dump(n) for n in range(1, DUMPS + 1)] + [
            restore_dump, backup_tree(1), backup_tree(2), restore_tree, check]

    def init(self, tool):
        shutil.rmtree(tool.base, ignore_errors=True)
        os.makedirs(tool.cache)
        init = subprocess.run(tool.init(), env=tool.env, capture_output=True, text=True)
        if init.returncode != 0:
            raise StepFailed(f"{tool.name} init exited with status {init.returncode}: {init.stdout}{init.stderr}")

    def run_repetition(self, rep, order):
        """Step by step, each step by every tool in turn: a slow moment of a shared machine falls on
        one step of all three tools rather than on every step of one tool."""
        tools = {name: Tool(name, self, rep) for name in order}
        plans = {}
        for name in order:
            try:
                self.init(tools[name])
                plans[name] = self.steps(tools[name], rep)
            except StepFailed as failure:
                self.fail(failure, tools[name])
        for index in range(len(self.steps(tools[order[0]], rep))):
            for name in order:
                if name not in plans:
                    continue
                try:
                    plans[name][index]()
                except StepFailed as failure:
                    self.fail(failure, tools[name])
                    del plans[name]
        for tool in tools.values():
            shutil.rmtree(tool.base, ignore_errors=True)

    def fail(self, failure, tool):
        log(f"FAILED: {failure}")
        self.errors.append(str(failure))

    def run(self):
        self.load_before = loadavg()
        busy0, ours0, wall0 = cpu_busy_seconds(), children_cpu_seconds(), time.monotonic()
        if self.args.only != "s3":
            for rep in range(self.args.reps):
                order = TOOLS[rep % len(TOOLS):] + TOOLS[:rep % len(TOOLS)]
                log(f"repetition {rep + 1} of {self.args.reps}: {', '.join(order)}")
                self.run_repetition(rep, order)
        if self.args.only == "s3" or self.args.s3 == "1":
            run_s3(self)
        self.wall = time.monotonic() - wall0
        busy = cpu_busy_seconds() - busy0
        ours = children_cpu_seconds() - ours0
        cores = os.cpu_count() or 1
        self.foreign_cpu = max(0.0, busy - ours)
        self.foreign_share = self.foreign_cpu / (self.wall * cores) if self.wall > 0 else 0
        self.load_after = loadavg()


class Moto:
    """moto's S3 server on a free loopback port, started by scripts/lib/s3-test-server.py as the
    tests start it (signatures checked), with the bucket the bench writes to."""

    def __init__(self, bench):
        self.ready = os.path.join(bench.work, "moto-ready.json")
        if os.path.exists(self.ready):
            os.remove(self.ready)
        self.log = open(os.path.join(bench.logs, "moto.log"), "ab")
        self.process = subprocess.Popen(
            ["python3", os.path.join(bench.args.root, "scripts", "lib", "s3-test-server.py"), "moto",
             "--bucket", S3_BUCKET, "--ready", self.ready],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not os.path.exists(self.ready):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StepFailed(f"moto's S3 server did not start; see {self.log.name}")
            time.sleep(0.1)
        with open(self.ready) as f:
            info = json.load(f)
        self.port = info["port"]
        self.key_id, self.secret = info["keys"]["kho"]

    def cpu_seconds(self):
        """CPU (user + system, all threads) moto used so far: it serves every request in this process."""
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


class KhoAt:
    """kho with a repository in a local folder ("local") or in moto's bucket ("s3")."""

    def __init__(self, where, bench, rep, moto):
        self.where = where
        self.name = "kho-" + where
        self.bench = bench
        self.base = os.path.join(bench.work, f"s3rep{rep + 1}-{where}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KHO_", "AWS_"))}
        env["KHO_PASSWORD"] = "bench-password-kho"
        if where == "s3":
            env.update(KHO_REPOSITORY=f"s3:http://127.0.0.1:{moto.port}/{S3_BUCKET}/rep{rep + 1}",
                       AWS_ACCESS_KEY_ID=moto.key_id, AWS_SECRET_ACCESS_KEY=moto.secret)
        else:
            env["KHO_REPOSITORY"] = os.path.join(self.base, "repository")
        self.env = env


def read_through(path):
    """Reads every regular file under `path` (or `path` itself), so that its pages are cached."""
    def read(name):
        try:
            with open(name, "rb", buffering=0) as f:
                while f.readinto(buffer):
                    pass
        except OSError:
            pass
    buffer = bytearray(1 << 20)
    if os.path.isdir(path):
        for folder, _, files in os.walk(path):
            for name in files:
                full = os.path.join(folder, name)
                if os.path.isfile(full) and not os.path.islink(full):
                    read(full)
    else:
        read(path)


def set_aside(work, path, label):
    """Restored trees are moved aside, not deleted, until the script ends (the work folder goes
    then). ext4 does not hand out an inode deleted in the last 60 to 300 seconds
    (`recently_deleted()` in its inode allocator): right after 53,000 files were deleted, creating
    files spends its time scanning past them (`perf`: find_inode_bit, recently_deleted,
    find_get_block_common), so a tool that restored, or even wrote packs, just after another
    tool's restored tree was deleted took 15 times as long, whichever tool it was."""
    aside = os.path.join(work, "set-aside", label)
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    os.rename(path, aside)


def s3_reps(args):
    """As many repetitions as the rest (a median of two is the mean of a good and a bad sample, and
    a full run's writeback stalls make bad ones); since restores read whole packs the S3 part takes
    about a minute a repetition."""
    return args.reps


def run_s3(bench):
    """kho into S3 (moto) and into a local folder, step by step in turn, on dump 1 and the tree.
    moto keeps objects in memory: a new server for each repetition."""
    kho = bench.kho
    reps = s3_reps(bench.args)
    for rep in range(reps):
        order = ["local", "s3"] if rep % 2 == 0 else ["s3", "local"]
        log(f"S3 repetition {rep + 1} of {reps}: {', '.join(order)}")
        moto = Moto(bench)
        try:
            targets = {where: KhoAt(where, bench, rep, moto) for where in order}
            for target in targets.values():
                shutil.rmtree(target.base, ignore_errors=True)
                os.makedirs(target.base)
                init = subprocess.run([kho, "init"], env=target.env, capture_output=True, text=True)
                if init.returncode != 0:
                    raise StepFailed(f"{target.name} init exited with status {init.returncode}: {init.stdout}{init.stderr}")

            def timed(target, key, argv, stdin_path=None, cwd=None):
                before = moto.cpu_seconds()
                bench.timed(target, rep, key, argv, stdin_path=stdin_path, cwd=cwd)
                if target.where == "s3":
                    used = moto.cpu_seconds() - before
                    bench.record(target.name, "moto_cpu_" + key, used)
                    log(f"  {'moto':6} {key:13} cpu {used:7.2f} s (the S3 server, one Python process)")

            def restore(target, key, path_in_target, original, compare_tree):
                dest = os.path.join(target.base, "restore")
                os.makedirs(dest)
                timed(target, key, [kho, "restore", "latest", "--target", dest], cwd=dest)
                restored = os.path.join(dest, path_in_target)
                if compare_tree:
                    if rep == 0 or bench.args.verify_all:
                        diff = subprocess.run(["diff", "-r", "--no-dereference", "-q", original, restored],
                                              capture_output=True, text=True)
                        if diff.returncode != 0:
                            raise StepFailed(f"{target.name}: the restored tree differs:\n" + diff.stdout[:2000] + diff.stderr)
                elif not os.path.exists(restored) or not filecmp.cmp(restored, original, shallow=False):
                    raise StepFailed(f"{target.name}: the restored dump {restored} differs from {original}")
                if compare_tree:
                    set_aside(bench.args.work, dest, f"{target.name}-{key}-{rep}")
                else:
                    shutil.rmtree(dest)

            steps = [
                lambda t: timed(t, "backup_dump1", [kho, "backup", "--stdin", "--stdin-name", "db.sql"], stdin_path=bench.dumps[0]),
                lambda t: restore(t, "restore_dump1", "db.sql", bench.dumps[0], False),
                lambda t: timed(t, "backup_tree1", [kho, "backup", bench.tree]),
                lambda t: restore(t, "restore_tree1", bench.tree.lstrip("/"), bench.tree, True),
            ]
            failed = set()
            for step in steps:
                for where in order:
                    if where in failed:
                        continue
                    try:
                        step(targets[where])
                    except StepFailed as failure:
                        bench.fail(failure, targets[where])
                        failed.add(where)
            for target in targets.values():
                shutil.rmtree(target.base, ignore_errors=True)
        except StepFailed as failure:
            log(f"FAILED: {failure}")
            bench.errors.append(str(failure))
        finally:
            moto.stop()


def s3_table(bench):
    """Rows of the S3 part: medians local / S3, the ratio and its target, CPU of kho and of moto."""
    rows = ["| figure | kho, local folder | kho, S3 (moto on loopback) | S3 / local | target | "
            "kho CPU, local / S3 | moto CPU (share of the S3 wall time) |",
            "| --- | ---: | ---: | ---: | --- | ---: | ---: |"]
    failed = 0
    local, s3 = bench.results.get("kho-local", {}), bench.results.get("kho-s3", {})
    for key, label in S3_STEPS:
        a, b = median(local.get(key, [])), median(s3.get(key, []))
        r = ratio(b, a)
        if r is None:
            verdict = f"≤ {S3_TARGET:.2f}: no result"
            failed += 1
        elif r <= S3_TARGET:
            verdict = f"≤ {S3_TARGET:.2f}: pass"
        else:
            verdict = f"≤ {S3_TARGET:.2f}: **FAIL**"
            failed += 1
        cpu_a, cpu_b = median(local.get("cpu_" + key, [])), median(s3.get("cpu_" + key, []))
        moto = median(s3.get("moto_cpu_" + key, []))
        cpu = "—" if cpu_a is None or cpu_b is None else f"{cpu_a:.2f} s / {cpu_b:.2f} s"
        moto_text = "—" if moto is None or not b else f"{moto:.2f} s ({100 * moto / b:.0f}%)"
        rows.append(f"| {label} | {fmt(a, 's')} | {fmt(b, 's')} | {'—' if r is None else f'{r:.2f}'} | {verdict} | "
                    f"{cpu} | {moto_text} |")
    return rows, failed


def s3_section(bench, args, heading):
    rows, failed = s3_table(bench)
    lines = [heading, ""]
    lines.append(f"kho into an S3 repository on moto's S3 server (loopback, signatures checked, one Python process) "
                 f"against kho into a local folder, in the same run, on the same data; medians of {s3_reps(args)} "
                 f"repetition{'s' if s3_reps(args) != 1 else ''}, the two interleaved step by step.")
    lines.append("")
    lines += rows
    lines.append("")
    lines.append(f"S3 targets met: {len(S3_STEPS) - failed} of {len(S3_STEPS)}. A moto CPU share near 100% means "
                 f"the Python server, not kho, set the S3 time.")
    return lines


def write_s3_only_report(bench, args):
    """`--only s3`: print the S3 section; with --write-doc 1, put it between the markers of
    docs/BENCHMARKS.md's S3 section (nothing else of the page is touched)."""
    now = datetime.datetime.now(datetime.timezone.utc).astimezone()
    info = machine(args)
    lines = s3_section(bench, args, f"Latest `scripts/bench --only s3` run: {now:%Y-%m-%d %H:%M %Z}"
                       f"{' (quick mode)' if args.quick == '1' else ''}, kho {info['kho']}, "
                       f"load average {bench.load_before} before, {bench.load_after} after.")
    lines.append("")
    lines.append(data_description(bench, args, dumps=1))
    if bench.errors:
        lines.append("")
        lines.append("Errors:")
        for error in bench.errors:
            lines += ["```", error.strip(), "```"]
    section = "\n".join(lines)
    print()
    print(section)
    if args.write_doc != "1":
        log("docs/BENCHMARKS.md not written (BENCH_WRITE=1 writes it)")
        return
    path = os.path.join(args.root, "docs", "BENCHMARKS.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = text.find(S3_MARKER_START), text.find(S3_MARKER_END)
    if start < 0 or end < start:
        log(f"{path} has no {S3_MARKER_START} … {S3_MARKER_END} block: not written")
        return
    text = text[:start + len(S3_MARKER_START)] + "\n" + section + "\n" + text[end:]
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    log(f"wrote the S3 block of {path}")


def median(values):
    return statistics.median(values) if values else None


def fmt(value, unit):
    if value is None:
        return "—"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MB":
        return f"{value / 1e6:.1f} MB"
    if unit == "MiB":
        return f"{value / 1048576:.1f} MiB"
    return str(value)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def table(bench):
    """Markdown table rows of the medians, the ratios and the targets; and the number of failed targets."""
    rows = []
    failed = 0
    figures = []
    for key, label, unit, target in STEPS:
        figures.append((key, label, unit, target))
    for key, label, target in SIZES:
        figures.append((key, label, "MB", target))
    for key, label, _, _ in STEPS:
        figures.append(("rss_" + key, "peak memory: " + label, "MiB", RSS_TARGET))
    rows.append("| figure | kho | restic | borg | kho / restic | kho / borg | target (kho / restic) |")
    rows.append("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for key, label, unit, target in figures:
        m = {tool: median(bench.results[tool].get(key, [])) for tool in TOOLS}
        r_restic, r_borg = ratio(m["kho"], m["restic"]), ratio(m["kho"], m["borg"])
        if target is None:
            verdict = ""
        elif r_restic is None:
            verdict = f"≤ {target:.2f}: no result"
            failed += 1
        elif r_restic <= target:
            verdict = f"≤ {target:.2f}: pass"
        else:
            verdict = f"≤ {target:.2f}: **FAIL**"
            failed += 1
        rows.append(f"| {label} | {fmt(m['kho'], unit)} | {fmt(m['restic'], unit)} | {fmt(m['borg'], unit)} | "
                    f"{'—' if r_restic is None else f'{r_restic:.2f}'} | {'—' if r_borg is None else f'{r_borg:.2f}'} | {verdict} |")
    return rows, failed


def cpu_table(bench):
    rows = ["| command | kho | restic | borg | kho / restic | kho / borg |", "| --- | ---: | ---: | ---: | ---: | ---: |"]

    def cell(tool, key):
        total, system = median(bench.results[tool].get("cpu_" + key, [])), median(bench.results[tool].get("sys_" + key, []))
        return "—" if total is None else f"{total:.2f} s (sys {system:.2f})"

    for key, label, _, _ in STEPS:
        m = {tool: median(bench.results[tool].get("cpu_" + key, [])) for tool in TOOLS}
        r1, r2 = ratio(m["kho"], m["restic"]), ratio(m["kho"], m["borg"])
        rows.append(f"| {label} | {cell('kho', key)} | {cell('restic', key)} | {cell('borg', key)} | "
                    f"{'—' if r1 is None else f'{r1:.2f}'} | {'—' if r2 is None else f'{r2:.2f}'} |")
    return rows


def baseline_table(bench):
    """kho against the baseline kho (BENCH_BASELINE): wall and CPU medians and their ratios."""
    rows = ["| figure | kho | baseline | kho / baseline | CPU kho | CPU baseline | CPU kho / baseline |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, label, unit, _ in STEPS:
        a, b = median(bench.results["kho"].get(key, [])), median(bench.results["kho-base"].get(key, []))
        ca, cb = median(bench.results["kho"].get("cpu_" + key, [])), median(bench.results["kho-base"].get("cpu_" + key, []))
        r, rc = ratio(a, b), ratio(ca, cb)
        rows.append(f"| {label} | {fmt(a, unit)} | {fmt(b, unit)} | {'—' if r is None else f'{r:.3f}'} | "
                    f"{fmt(ca, 's')} | {fmt(cb, 's')} | {'—' if rc is None else f'{rc:.3f}'} |")
    for key, label, _ in SIZES:
        a, b = median(bench.results["kho"].get(key, [])), median(bench.results["kho-base"].get(key, []))
        r = ratio(a, b)
        rows.append(f"| {label} | {fmt(a, 'MB')} | {fmt(b, 'MB')} | {'—' if r is None else f'{r:.3f}'} | | | |")
    return rows


def raw_table(bench):
    rows = ["| figure | " + " | ".join(TOOLS) + " |", "| --- |" + " --- |" * len(TOOLS)]
    for key, label, unit, _ in STEPS:
        cells = [", ".join(f"{v:.2f}" for v in bench.results[tool].get(key, [])) or "—" for tool in TOOLS]
        rows.append(f"| {label} (s) | " + " | ".join(cells) + " |")
    return rows


def machine(args):
    info = {}
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                info["ram"] = f"{int(line.split()[1]) / 1048576:.1f} GiB"
    info["cpu"] = model
    info["cores"] = str(os.cpu_count())
    info["kernel"] = f"{platform.system()} {platform.release()}"
    info["os"] = first_line(["sh", "-c", ". /etc/os-release && echo \"$PRETTY_NAME\""])
    info["kho"] = args.kho_rev
    info["swift"] = first_line(["swift", "--version"])
    info["restic"] = first_line(["restic", "version"])
    info["borg"] = first_line(["borg", "--version"])
    info["postgresql"] = args.pg_version
    return info


def data_description(bench, args, dumps=DUMPS):
    sizes = [os.path.getsize(d) for d in bench.dumps[:dumps]]
    files = entries = total = 0
    for directory, dirs, names in os.walk(bench.tree):
        entries += len(dirs) + len(names)
        for name in names:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and not os.path.islink(path):
                files += 1
                total += os.path.getsize(path)
    dumps_text = ", ".join(f"{s / 1e6:.0f} MB" for s in sizes)
    what = "three `pg_dump --format=plain` dumps" if dumps == 3 else "the first `pg_dump --format=plain` dump"
    return (f"- database: scale {args.scale}; {what} of {dumps_text} "
            f"(citizens, documents, attachments{'; two nights of churn between them' if dumps == 3 else ''})\n"
            f"- tree: copy of `{args.tree_sources}`: {files} files, {entries} entries, {total / 1e6:.0f} MB")


def write_report(bench, args):
    now = datetime.datetime.now(datetime.timezone.utc).astimezone()
    total_minutes = (time.time() - args.started) / 60
    rows, failed = table(bench)
    noisy = bench.foreign_share > 0.05 or float(args.load_start.split()[0]) > 0.5
    label = " (machine shared with builds; noisy)" if noisy else ""
    info = machine(args)
    lines = []
    lines.append("## Latest run")
    lines.append("")
    lines.append(f"{now:%Y-%m-%d %H:%M %Z}{label}{' — quick mode, not a real measurement' if args.quick == '1' else ''}.")
    lines.append(f"Medians of {args.reps} repetition{'s' if args.reps != 1 else ''}; the whole script took "
                 f"{total_minutes:.1f} min, the measured part {bench.wall / 60:.1f} min.")
    lines.append("")
    lines.append("Machine:")
    lines.append("")
    for key in ["cpu", "cores", "ram", "os", "kernel", "kho", "swift", "restic", "borg", "postgresql"]:
        lines.append(f"- {key}: {info[key]}")
    lines.append(f"- load average (1, 5, 15 min): {args.load_start} at the start of the script, "
                 f"{bench.load_before} before the measurements, {bench.load_after} after them")
    lines.append(f"- CPU used by other processes during the measurements: {bench.foreign_cpu:.0f} s "
                 f"({100 * bench.foreign_share:.0f}% of {os.cpu_count()} cores × {bench.wall:.0f} s)")
    lines.append("")
    lines.append("Data:")
    lines.append("")
    lines.append(data_description(bench, args))
    lines.append("")
    lines += rows
    lines.append("")
    lines.append(f"Targets met: {sum(1 for r in rows if ': pass' in r)} of {sum(1 for r in rows if '≤' in r)}.")
    if bench.errors:
        lines.append("")
        lines.append("Errors (after a failure, the rest of that tool's repetition was skipped):")
        lines.append("")
        for error in bench.errors:
            lines.append("```")
            lines.append(error.strip())
            lines.append("```")
    lines.append("")
    lines.append("CPU time (user + system, all threads; in brackets the system part; medians):")
    lines.append("")
    lines += cpu_table(bench)
    lines.append("")
    if bench.baseline:
        lines.append(f"kho against the baseline kho ({bench.baseline}), same data, same run, interleaved:")
        lines.append("")
        lines += baseline_table(bench)
        lines.append("")
    lines.append("Every repetition (wall seconds, in the order run):")
    lines.append("")
    lines += raw_table(bench)
    lines.append("")
    if args.s3 == "1":
        lines += s3_section(bench, args, "S3 (`scripts/bench --only s3` runs this part alone):")
        lines.append("")
    section = "\n".join(lines)
    print()
    print(section)

    if args.write_doc != "1":
        log("quick mode: docs/BENCHMARKS.md not written (BENCH_WRITE=1 writes it)")
        return failed
    path = os.path.join(args.root, "docs", "BENCHMARKS.md")
    head = "# Benchmarks\n\n`scripts/bench` writes the section below; the method is described in the script.\n\n"
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        marker = text.find("\n## Latest run")
        head = text[:marker + 1] if marker >= 0 else text.rstrip("\n") + "\n\n"
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(head + section)
    os.replace(path + ".tmp", path)
    log(f"wrote {path}")
    return failed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--kho", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--kho-rev", default="unknown")
    parser.add_argument("--pg-version", default="unknown")
    parser.add_argument("--scale", default="1")
    parser.add_argument("--tree-sources", default="")
    parser.add_argument("--load-start", default="")
    parser.add_argument("--started", type=float, default=time.time())
    parser.add_argument("--quick", default="0")
    parser.add_argument("--write-doc", default="1")
    parser.add_argument("--verify-all", action="store_true", help="compare the restored tree in every repetition")
    parser.add_argument("--only", default="", choices=["", "s3"], help="s3: only kho on S3 against kho on a local folder")
    parser.add_argument("--s3", default="1", help="1: after the tools, the S3 part too")
    parser.add_argument("--baseline", default="", help="a second kho binary measured beside the first (BENCH_BASELINE)")
    args = parser.parse_args()
    if args.baseline:
        TOOLS.insert(1, "kho-base")

    bench = Bench(args)
    bench.run()
    if args.only == "s3":
        write_s3_only_report(bench, args)
    else:
        write_report(bench, args)
    with open(os.path.join(args.work, "results.json"), "w") as f:
        json.dump(bench.results, f, indent=1)
    if bench.errors:
        log(f"{len(bench.errors)} command(s) failed; see above")
        sys.exit(1)


if __name__ == "__main__":
    main()
