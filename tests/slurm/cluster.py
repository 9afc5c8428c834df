"""Start and stop a real single-node SLURM cluster on 127.0.0.1 for tests (as root, no systemd).

Installs Debian's munge/slurmctld/slurmd/slurm-client when missing, writes slurm.conf and
gres.conf (one fake GPU backed by /dev/null) into a state folder, starts munged, slurmctld and
slurmd, and stops exactly the daemons it started, by PID. Facts from shared/spec/slurm.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

SLURM_CONF = """ClusterName=matchrepro
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ReturnToService=2
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={state}/jobcomp.txt
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/slurmd
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
MailProg=/bin/true
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} Gres=gpu:fake:1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

GRES_CONF = "AutoDetect=off\nNodeName=localhost Name=gpu Type=fake File=/dev/null\n"


class ClusterUnavailable(RuntimeError):
    """Why no cluster could be started (the tests skip with this reason)."""


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def ensure_installed() -> None:
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch", "squeue")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ClusterUnavailable("SLURM is not installed and cannot be (needs root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = _run(["apt-get", "update", "-qq"], env=env, timeout=300)
    r = _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "munge", "slurmctld", "slurmd",
              "slurm-client"], env=env, timeout=600)
    if r.returncode != 0:
        raise ClusterUnavailable(f"apt-get install slurm failed: {r.stderr.strip()[-300:]}")


class Cluster:
    """Context manager: a running single-node cluster; ``conf`` is its slurm.conf path."""

    def __init__(self, state: Path):
        self.state = Path(state)
        self.pids: list[int] = []
        self.env: dict[str, str] = {}

    def __enter__(self) -> "Cluster":
        if os.geteuid() != 0:
            raise ClusterUnavailable("starting SLURM daemons needs root")
        ensure_installed()
        for daemon in ("slurmctld", "slurmd"):
            if _run(["pgrep", "-x", daemon]).returncode == 0:
                raise ClusterUnavailable(f"a {daemon} is already running on this machine; not touching it")
        s = self.state
        for d in ("ctld", "slurmd"):
            (s / d).mkdir(parents=True, exist_ok=True)
        mem = int(_run(["slurmd", "-C"]).stdout.split("RealMemory=")[1].split()[0]) - 500
        cpus = os.cpu_count() or 2
        conf_dir = Path("/etc/slurm")
        conf_dir.mkdir(exist_ok=True)
        self._backup = {}
        for name, text in (("slurm.conf", SLURM_CONF.format(state=s, cpus=cpus, mem=mem)), ("gres.conf", GRES_CONF)):
            p = conf_dir / name
            self._backup[p] = p.read_text() if p.exists() else None
            p.write_text(text)
        # munge
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            raise ClusterUnavailable("/etc/munge/munge.key is missing (munge's postinst did not run)")
        if _run(["pgrep", "-x", "munged"]).returncode != 0:
            r = _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"])
            if r.returncode != 0:
                raise ClusterUnavailable(f"munged did not start: {r.stderr.strip()}")
            time.sleep(0.3)
            pid = _run(["pgrep", "-x", "munged"]).stdout.split()
            self.pids += [int(p) for p in pid]
        r = _run(["slurmctld"])
        if r.returncode != 0:
            raise ClusterUnavailable(f"slurmctld did not start: {r.stderr.strip()}")
        r = _run(["slurmd", "-N", "localhost"])
        if r.returncode != 0:
            raise ClusterUnavailable(f"slurmd did not start: {r.stderr.strip()}")
        time.sleep(0.5)
        for f in ("slurmctld.pid", "slurmd.pid"):
            if (s / f).exists():
                self.pids.append(int((s / f).read_text().split()[0]))
        deadline = time.time() + 30
        while time.time() < deadline:
            out = _run(["sinfo", "-h", "-o", "%T"]).stdout.strip()
            if out in ("idle", "mixed", "allocated"):
                return self
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise ClusterUnavailable(f"the node did not become idle (sinfo: {out!r}); see {s}/slurmd.log")

    def __exit__(self, *exc) -> None:
        # cancel what is still queued or running, so no job step outlives the cluster
        _run(["scancel", "--full", "--partition=debug"], timeout=30)
        deadline = time.time() + 20
        while time.time() < deadline and _run(["squeue", "-h"]).stdout.strip():
            time.sleep(0.5)
        for pid in reversed(self.pids):
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
        # restore the machine's SLURM config, or remove ours: a config pointing at a stopped
        # controller makes every later `scontrol` (and so Snakemake's SLURM plugin) wait ~10 s
        for p, text in getattr(self, "_backup", {}).items():
            if text is None:
                p.unlink(missing_ok=True)
            else:
                p.write_text(text)
