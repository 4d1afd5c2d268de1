"""A throw-away single-node Slurm cluster (munged, slurmctld, slurmd) for the tests.

Everything lives in one temporary directory: the munge key and socket, slurm.conf and
gres.conf, state, spool, pid and log files. The daemons run in the foreground as
children of the test process on free TCP ports, so nothing under /etc or /run is
touched and a second cluster on the same machine does not interfere. Clients find the
cluster through ``SlurmCluster.env`` (``SLURM_CONF``); :class:`SlurmUnavailable` carries
the precise reason when Slurm cannot be installed or started.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

APT_PACKAGES = ("slurm-wlm", "munge")
REQUIRED_PROGRAMS = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "srun", "sinfo", "scontrol", "scancel")
PR_SET_PDEATHSIG = 1
MIN_JOB_AGE_S = 3600  # squeue must still list finished jobs when the workflow checks them, and when the test does


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started here; the message says why."""


def missing_programs() -> list[str]:
    return [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]


def install_slurm(timeout_s: int = 600) -> None:
    """``apt-get install -y slurm-wlm munge`` when a Slurm or munge program is missing.

    Raises
    ------
    SlurmUnavailable
        Not root, no apt-get, or the install failed (with apt's last lines).
    """
    missing = missing_programs()
    if not missing:
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"{', '.join(missing)} not installed and not root: `apt-get install -y {' '.join(APT_PACKAGES)}`")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable(f"{', '.join(missing)} not installed and no apt-get to install {' '.join(APT_PACKAGES)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", *APT_PACKAGES]
    proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=timeout_s)
    if proc.returncode != 0:  # stale or absent package lists: refresh once
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env, timeout=timeout_s)
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=timeout_s)
    still_missing = missing_programs()
    if proc.returncode != 0 or still_missing:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise SlurmUnavailable(
            f"`{' '.join(install)}` exited {proc.returncode}, still missing {still_missing or 'nothing'}:\n{tail}"
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def total_memory_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise SlurmUnavailable("no MemTotal in /proc/meminfo")


def slurm_conf(root: Path, node: str, cpus: int, real_memory_mb: int, ctld_port: int, slurmd_port: int) -> str:
    """slurm.conf for one node with ``cpus`` CPUs, ``real_memory_mb`` MB and one (fake) GPU."""
    return f"""\
ClusterName=rmtlens-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
# no cgroups: processes tracked by parent pid, no binding, no accounting database
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge={MIN_JOB_AGE_S}
KillWait=5
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={real_memory_mb} Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def log_tail(path: Path, lines: int = 8) -> str:
    if not path.is_file():
        return f"({path.name}: no log)"
    return f"{path.name}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class SlurmCluster:
    """A running single-node cluster; ``env`` is the environment for its clients."""

    root: Path
    node: str
    cpus: int
    real_memory_mb: int
    env: dict[str, str]
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(self, *cmd: str, timeout: int = 30) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout)

    def job_states(self) -> dict[str, tuple[str, str]]:
        """{job id: (state, job name)} of every job squeue still knows (MinJobAge after it ended)."""
        out = self.run("squeue", "--states=all", "--noheader", "--format=%i|%T|%j").stdout
        return {i: (state, name) for i, state, name in (line.split("|", 2) for line in out.splitlines() if line)}

    def stop(self) -> None:
        """Cancel leftover jobs, stop slurmd, slurmctld and munged (only these), remove the directory."""
        if self.daemons.get("slurmctld") and self.daemons["slurmctld"].poll() is None:
            active = [i for i, (state, _) in self.job_states().items() if state in ("PENDING", "RUNNING", "CONFIGURING")]
            if active:
                self.run("scancel", *active)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and any(
                    s in ("RUNNING", "COMPLETING") for s, _ in self.job_states().values()
                ):
                    time.sleep(1)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.daemons.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL (Linux prctl)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _start(cluster: SlurmCluster, name: str, cmd: list[str]) -> None:
    out = open(cluster.root / f"{name}.out", "w")
    cluster.daemons[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=cluster.env,
                                             stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    out.close()


def _wait_for(cluster: SlurmCluster, what: str, ready, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, proc in cluster.daemons.items():
            if proc.poll() is not None:
                raise SlurmUnavailable(
                    f"{name} exited with {proc.returncode} while waiting for {what}\n"
                    f"{log_tail(cluster.root / f'{name}.out')}\n{log_tail(cluster.root / f'{name}.log')}"
                )
        if ready():
            return
        time.sleep(0.5)
    logs = "\n".join(log_tail(cluster.root / f"{n}.out") for n in cluster.daemons)
    raise SlurmUnavailable(f"{what}: not ready after {timeout_s:.0f} s\n{logs}")


def start_cluster(startup_timeout_s: float = 60) -> SlurmCluster:
    """Install Slurm if needed and start a one-node cluster with every CPU of this machine,
    80 % of its memory and one GPU GRES backed by /dev/null.

    Raises
    ------
    SlurmUnavailable
        With the reason: install failure, a daemon that exits, or a node that never becomes idle.
    """
    install_slurm()
    # munged insists that every directory above its socket is world-executable: not pytest's 0700 tmp_path
    root = Path(tempfile.mkdtemp(prefix="rmtlens-slurm-"))
    root.chmod(0o755)
    for sub in ("state", "spool", "bin"):
        (root / sub).mkdir()
    node = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    real_memory_mb = int(0.8 * total_memory_mib())
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, node, cpus, real_memory_mb, free_port(), free_port()))
    (root / "gres.conf").write_text(f"NodeName={node} Name=gpu File=/dev/null\n")
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    # snakemake-executor-plugin-slurm-jobstep drops every SLURM_* variable, SLURM_CONF too,
    # before its `srun` inside a job; a real cluster's srun finds /etc/slurm/slurm.conf
    # instead, so give it this cluster's file the same way.
    srun = root / "bin" / "srun"
    srun.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which("srun")} "$@"\n')
    srun.chmod(0o755)
    env = dict(os.environ, SLURM_CONF=str(conf), PATH=f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    cluster = SlurmCluster(root=root, node=node, cpus=cpus, real_memory_mb=real_memory_mb, env=env)
    try:
        socket_path = root / "munge.socket"
        _start(cluster, "munged", ["munged", "--foreground", f"--socket={socket_path}", f"--key-file={key}",
                                   f"--pid-file={root / 'munged.pid'}", f"--seed-file={root / 'munged.seed'}"])
        _wait_for(cluster, "munged socket", socket_path.exists, 15)
        _start(cluster, "slurmctld", ["slurmctld", "-D", "-i", "-f", str(conf)])
        _start(cluster, "slurmd", ["slurmd", "-D", "-f", str(conf), "-N", node])

        def node_idle() -> bool:
            proc = cluster.run("sinfo", "--noheader", "--Node", "--format=%T", timeout=15)
            return proc.returncode == 0 and proc.stdout.strip() == "idle"

        _wait_for(cluster, f"node {node} idle in sinfo", node_idle, startup_timeout_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster
