"""A one-node SLURM cluster on this machine, for the cluster execution tests (tests/test_slurm.py).

    python tests/slurm/cluster.py start|stop|status|mark-stopped

`start` installs Debian's Slurm 22.05 (munge, slurmctld, slurmd, slurm-client, slurmdbd, mariadb-server) with
apt-get when missing, writes /etc/slurm/{slurm,gres,slurmdbd}.conf (this host as the only node, partitions
`cpu` (default), `gpu` and `gaudi`, two fake GPUs as GRES backed by /dev/null symlinks, accounting through
slurmdbd + MariaDB), starts the daemons without systemd, resumes the node and waits until `sinfo` shows it
idle.
It records the PIDs it started in a state file; `stop` ends only those.  `start` is idempotent.

Needs root and apt-get (Debian/Ubuntu).  `available()` says why not, so tests skip with a reason.
Recipe and pitfalls: /work/shared/notes/slurm-local.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ["munge", "slurmctld", "slurmd", "slurm-client", "slurmdbd", "mariadb-server"]
CLUSTER = "plmscale"
PARTITIONS = ("cpu", "gpu", "gaudi")
N_GPUS = 2
ETC = Path("/etc/slurm")
LIB = Path("/var/lib/slurm")
LOGS = Path("/var/log/slurm")
FAKEDEV = LIB / "fakedev"
STATE = LIB / "plmscale-harness.json"
DB_USER, DB_PASS, DB_NAME = "slurm", "plmscale-ci", "slurm_acct_db"
PIDFILES = {
    "munged": Path("/run/munge/munged.pid"),
    "mariadbd": Path("/run/mysqld/mysqld.pid"),
    "slurmdbd": Path("/run/slurmdbd.pid"),
    "slurmctld": Path("/run/slurmctld.pid"),
    "slurmd": Path("/run/slurmd.pid"),
}
ORDER = list(PIDFILES)  # start order; stop runs it backwards
STOPPED_MARK = "# stopped by tests/slurm/cluster.py: clients give up at once\nMessageTimeout=1\n"


class ClusterError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[slurm-harness] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        tail = f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        raise ClusterError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return proc


def node_name() -> str:
    return socket.gethostname().split(".")[0]


# ---------------------------------------------------------------------------------------------- install
def missing_packages() -> list[str]:
    missing = []
    for pkg in PACKAGES:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        if proc.returncode != 0 or "install ok installed" not in proc.stdout:
            missing.append(pkg)
    return missing


def install() -> None:
    missing = missing_packages()
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"apt-get install {' '.join(missing)}")
    install_cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    if run(install_cmd, check=False, timeout=900, env=env).returncode != 0:
        run(["apt-get", "update", "-q"], timeout=600, env=env)
        run(install_cmd, timeout=900, env=env)


_AVAILABLE: tuple[bool, str] | None = None


def available() -> tuple[bool, str]:
    """(True, "") when a local cluster can run here, else (False, why) - the skip reason of the tests."""
    global _AVAILABLE
    if _AVAILABLE is None:
        _AVAILABLE = _available()
    return _AVAILABLE


def _available() -> tuple[bool, str]:
    if os.environ.get("PLMSCALE_SLURM", "1") == "0":
        return False, "PLMSCALE_SLURM=0"
    if sys.platform != "linux":
        return False, f"local SLURM needs Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return False, "local SLURM needs root (it installs packages and starts daemons)"
    if shutil.which("apt-get") is None or shutil.which("dpkg-query") is None:
        return False, "local SLURM needs apt-get (Debian/Ubuntu)"
    try:
        install()
    except (ClusterError, subprocess.TimeoutExpired, OSError) as exc:
        return False, f"installing {' '.join(PACKAGES)} failed: {str(exc)[:500]}"
    return True, ""


# ---------------------------------------------------------------------------------------------- config
# The node advertises at least this much (SlurmdParameters=config_overrides): the shipped profile asks for a
# cluster node's CPUs and memory (cpus_per_gpu: 8, cluster: 16 threads, 64 GB), which must be schedulable here
# as they are.  Nothing is enforced without cgroups, so a small CI machine just time-slices the jobs.
MIN_CPUS, MIN_MEM_MB = 32, 262144


def node_line() -> str:
    """This host as the only node: `slurmd -C`'s CPUs and RealMemory, raised to MIN_CPUS/MIN_MEM_MB."""
    fields = dict(f.split("=", 1) for f in run(["slurmd", "-C"]).stdout.splitlines()[0].split() if "=" in f)
    cpus = max(int(fields.get("CPUs", 1)), MIN_CPUS)
    mem = max(int(fields.get("RealMemory", 1000)), MIN_MEM_MB)
    return (
        f"NodeName={node_name()} NodeAddr=127.0.0.1 CPUs={cpus} Boards=1 SocketsPerBoard=1 "
        f"CoresPerSocket={cpus} ThreadsPerCore=1 RealMemory={mem} Gres=gpu:{N_GPUS} State=UNKNOWN"
    )


def write_configs() -> None:
    for d in (ETC, LIB / "slurmctld", LIB / "slurmd", LOGS, FAKEDEV):
        d.mkdir(parents=True, exist_ok=True)
    for i in range(N_GPUS):  # slurmd drops a GPU GRES without File= ("count reported lower than configured")
        dev = FAKEDEV / f"gpu{i}"
        if not dev.is_symlink():
            dev.symlink_to("/dev/null")
    node = node_name()
    partitions = "\n".join(
        f"PartitionName={p} Nodes={node} {'Default=YES ' if p == 'cpu' else ''}MaxTime=INFINITE State=UP"
        for p in PARTITIONS
    )
    slurm_conf = f"""# written by tests/slurm/cluster.py: a one-node CI cluster, no cgroups, no systemd
ClusterName={CLUSTER}
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmdParameters=config_overrides
AuthType=auth/munge
MpiDefault=none
StateSaveLocation={LIB}/slurmctld
SlurmdSpoolDir={LIB}/slurmd
SlurmctldPidFile={PIDFILES["slurmctld"]}
SlurmdPidFile={PIDFILES["slurmd"]}
SlurmctldLogFile={LOGS}/slurmctld.log
SlurmdLogFile={LOGS}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=300
KillWait=30
InactiveLimit=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
GresTypes=gpu
{node_line()}
{partitions}
"""
    (ETC / "slurm.conf").write_text(slurm_conf)
    (ETC / "gres.conf").write_text(f"AutoDetect=off\nName=gpu File={FAKEDEV}/gpu[0-{N_GPUS - 1}]\n")
    dbd = ETC / "slurmdbd.conf"
    dbd.write_text(f"""AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile={LOGS}/slurmdbd.log
PidFile={PIDFILES["slurmdbd"]}
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc={DB_NAME}
StorageUser={DB_USER}
StoragePass={DB_PASS}
""")
    dbd.chmod(0o600)  # slurmdbd refuses a world-readable config


# ---------------------------------------------------------------------------------------------- daemons
def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _alive(name: str, pid: int | None) -> bool:
    # /proc/<pid>/comm is truncated to 15 characters; a zombie or a recycled PID does not count
    if not pid or _comm(pid) != name[:15]:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _pid_from_file(name: str) -> int | None:
    try:
        pid = int(PIDFILES[name].read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(name, pid) else None


def _wait(what: str, ok, timeout: float = 30.0, step: float = 0.25) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ok():
            return
        time.sleep(step)
    raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}")


def load_state() -> dict:
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError):
        return {"pids": {}}


def save_state(state: dict) -> None:
    STATE.parent.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(state, indent=1))


def _start_munged() -> None:
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"])


def _start_mariadbd() -> None:
    run_dir = Path("/run/mysqld")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "mysql", "mysql")
    if not Path("/var/lib/mysql/mysql").is_dir():
        run(["mariadb-install-db", "--user=mysql", "--datadir=/var/lib/mysql"], timeout=300)
    with open(LOGS / "mariadbd.log", "ab") as out:
        subprocess.Popen(
            [
                "mariadbd",
                "--user=mysql",
                "--bind-address=127.0.0.1",
                f"--pid-file={PIDFILES['mariadbd']}",
                "--socket=/run/mysqld/mysqld.sock",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def _db_ready() -> bool:
    return subprocess.run(["mariadb", "-e", "SELECT 1"], capture_output=True).returncode == 0


def _setup_db() -> None:
    _wait("MariaDB to accept connections", _db_ready, timeout=60)
    sql = (f"CREATE DATABASE IF NOT EXISTS {DB_NAME}; "
           f"CREATE USER IF NOT EXISTS '{DB_USER}'@'localhost' IDENTIFIED BY '{DB_PASS}'; "
           f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'localhost'; FLUSH PRIVILEGES;")  # fmt: skip
    run(["mariadb", "-e", sql])


STARTERS = {
    "munged": _start_munged,
    "mariadbd": _start_mariadbd,
    "slurmdbd": lambda: run(["slurmdbd"]),
    "slurmctld": lambda: run(["slurmctld"]),
    "slurmd": lambda: run(["slurmd"]),
}


def node_state() -> str:
    cmd = ["sinfo", "-h", "-N", "-n", node_name(), "-o", "%T"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else ""


def is_up() -> bool:
    up = ("idle", "mixed", "allocated")
    return all(_pid_from_file(n) for n in ORDER) and node_state().rstrip("*") in up


def start(timeout: float = 90.0) -> None:
    ok, why = available()
    if not ok:
        raise ClusterError(why)
    t0 = time.monotonic()
    state = load_state()
    if is_up():
        log(f"already up ({node_name()}: {node_state()})")
        return
    write_configs()
    for name in ORDER:
        pid = _pid_from_file(name)
        if pid is None:
            log(f"starting {name}")
            STARTERS[name]()
            _wait(f"{name} to write {PIDFILES[name]}", lambda n=name: _pid_from_file(n) is not None)
            state["pids"][name] = _pid_from_file(name)
            save_state(state)
        if name == "mariadbd":
            _setup_db()
        if name == "slurmdbd":
            _wait(
                "slurmdbd to answer",
                lambda: (
                    subprocess.run(["sacctmgr", "-n", "list", "cluster"], capture_output=True).returncode == 0
                ),
            )
    node = node_name()
    _wait(
        "slurmctld to answer",
        lambda: subprocess.run(["scontrol", "ping"], capture_output=True).returncode == 0,
    )
    # a drain from an earlier bad config survives restarts in the state directory
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True)

    def idle() -> bool:
        st = node_state()
        if st.rstrip("*") in ("drained", "draining", "down", "inval"):
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True)
        return st.rstrip("*") == "idle"

    try:
        _wait(f"node {node} to be idle in sinfo", idle, timeout=timeout, step=1.0)
    except ClusterError as exc:
        detail = run(["scontrol", "show", "node", node], check=False).stdout
        raise ClusterError(f"{exc}\n{detail}\nsee {LOGS}/slurmd.log, {LOGS}/slurmctld.log") from None
    log(f"up in {time.monotonic() - t0:.1f} s: {node} idle, partitions {', '.join(PARTITIONS)}")


def stop(timeout: float = 30.0) -> None:
    """Ends the daemons this harness started (PIDs from the state file), newest first; nothing else."""
    state = load_state()
    pids = state.get("pids", {})
    for name in reversed(ORDER):
        pid = pids.get(name)
        if pid and _alive(name, pid):
            log(f"stopping {name} ({pid})")
            os.kill(pid, signal.SIGTERM)
            try:
                _wait(f"{name} ({pid}) to exit", lambda n=name, p=pid: not _alive(n, p), timeout=timeout)
            except ClusterError:
                os.kill(pid, signal.SIGKILL)
        pids.pop(name, None)
    save_state(state)
    mark_stopped()


def mark_stopped() -> None:
    """Make SLURM clients fail at once while this cluster is down.  With the controller gone, every
    ``scontrol``/``sinfo`` call retries for MessageTimeout - 1 seconds (9 s by default), and the Snakemake
    SLURM plugin runs ``scontrol show config`` when it is imported, i.e. at every ``snakemake`` start, SLURM
    used or not.  ``start`` writes the configuration anew."""
    conf = ETC / "slurm.conf"
    if conf.is_file() and STOPPED_MARK not in conf.read_text():
        conf.write_text(conf.read_text() + STOPPED_MARK)


def status() -> str:
    pids = load_state().get("pids", {})
    lines = [f"{n:10s} pid={_pid_from_file(n) or '-':<8} started_here={n in pids}" for n in ORDER]
    if shutil.which("sinfo"):
        lines.append(run(["sinfo"], check=False).stdout.strip())
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "status"
    try:
        if cmd == "start":
            start()
        elif cmd == "stop":
            stop()
        elif cmd == "mark-stopped":
            mark_stopped()
        elif cmd == "status":
            print(status())
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except ClusterError as exc:
        log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
