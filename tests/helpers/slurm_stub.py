"""Stub `sbatch`, `sacct`, `squeue`, `scancel` and `srun` that run a job array's tasks on this machine.

`SlurmStub(tmp_path)` writes the executables into `tmp_path/bin` (put `stub.env()`'s PATH first);
their state lives in `tmp_path/slurm-state`:

- `sbatch SCRIPT` records its call (argv and the script's `#SBATCH` lines) in `sbatch.jsonl`
  (or, after `refuse(message)`, rejects it with exit 1),
  prints `Submitted batch job N` and starts each array task (`#SBATCH --array=A-B%P`) as a detached
  process (its own session) that runs the script with bash under the variables SLURM sets for an
  array task. submitit moves the task pickles into place after sbatch returns; its task waits
  for them.
- Each task's state is a file `jobs/N_I`: PENDING, RUNNING, then COMPLETED or FAILED by the
  script's exit status (CANCELLED from scancel); `sacct -o JobID,State,NodeList --parsable2 -j N`
  reports them as submitit parses them.
- `srun [--opt X | --opt=X ...] CMD...` runs CMD with `--output`/`--error` expanded (%A %a %j %t).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path

_COMMON = """#!{python}
import json, os, re, signal, subprocess, sys, time
from pathlib import Path
STATE = Path({state!r})
JOBS = STATE / "jobs"
JOBS.mkdir(parents=True, exist_ok=True)
"""

_SBATCH = """
refuse = STATE / "refuse"
if refuse.exists():  # a cluster that rejects the job, as sbatch does: a message and exit 1
    print(f"sbatch: error: {{refuse.read_text()}}", file=sys.stderr)
    sys.exit(1)
script = Path(sys.argv[-1])
text = script.read_text()
flags = re.findall(r"^#SBATCH (--\\S+)", text, re.M)
counter = STATE / "next_job"
job = int(counter.read_text()) if counter.exists() else 4200
counter.write_text(str(job + 100))
with open(STATE / "sbatch.jsonl", "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "flags": flags, "job": job}}) + "\\n")
array = re.search(r"^#SBATCH --array=(\\d+)-(\\d+)", text, re.M)
name = re.search(r"^#SBATCH --job-name=(\\S+)", text, re.M)
tasks = range(int(array[1]), int(array[2]) + 1) if array else [None]
for task in tasks:
    tid = str(job) if task is None else f"{{job}}_{{task}}"
    (JOBS / tid).write_text("PENDING")
    env = {{
        **os.environ,
        "SLURM_JOB_ID": str(job + 1 + (task or 0)),  # an array task's own job number
        "SLURM_JOB_NAME": name[1] if name else "stub",
        "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NNODES": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost", "SLURM_JOB_NODELIST": "localhost",
        "SLURM_SUBMIT_DIR": os.getcwd(),
    }}
    if task is not None:
        env.update(SLURM_ARRAY_JOB_ID=str(job), SLURM_ARRAY_TASK_ID=str(task))
    out = open(STATE / f"task-{{tid}}.out", "ab")
    subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_stub_task")), tid, str(script)],
        env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,  # outlives sbatch and whoever called it, like a real job
    )
print(f"Submitted batch job {{job}}")
"""

_TASK = """
tid, script = sys.argv[1], sys.argv[2]
(JOBS / f"{{tid}}.pid").write_text(str(os.getpid()))
(JOBS / tid).write_text("RUNNING")
rc = subprocess.call(["bash", script])
if (JOBS / tid).read_text() != "CANCELLED":
    (JOBS / tid).write_text("COMPLETED" if rc == 0 else "FAILED")
"""

_SACCT = """
with open(STATE / "sacct.jsonl", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
wanted = {{sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "-j"}}
print("JobID|State|NodeList")
for path in sorted(JOBS.iterdir()):
    if path.suffix or path.name.split("_")[0] not in wanted:
        continue
    print(f"{{path.name}}|{{path.read_text()}}|localhost")
    print(f"{{path.name}}.batch|{{path.read_text()}}|localhost")  # steps: submitit skips them
"""

_SQUEUE = """
print("JOBID|STATE")
for path in sorted(JOBS.iterdir()):
    if not path.suffix and path.read_text() in ("PENDING", "RUNNING"):
        print(f"{{path.name}}|{{path.read_text()}}")
"""

_SCANCEL = """
ids = [a for a in sys.argv[1:] if not a.startswith("-") and a[0].isdigit()]
sig = signal.SIGTERM
if "--signal" in sys.argv:
    sig = getattr(signal, "SIG" + sys.argv[sys.argv.index("--signal") + 1].removeprefix("SIG"))
for path in sorted(JOBS.glob("*.pid")):
    tid = path.stem
    if any(tid == i or tid.split("_")[0] == i for i in ids):
        try:
            os.killpg(int(path.read_text()), sig)
        except ProcessLookupError:
            pass
        if sig in (signal.SIGTERM, signal.SIGKILL):
            (JOBS / tid).write_text("CANCELLED")
"""

_SRUN = """
args, files = sys.argv[1:], {{}}
while args and args[0].startswith("-"):
    opt = args.pop(0)
    if "=" in opt:
        opt, value = opt.split("=", 1)
    elif opt in ("--output", "--error", "-o", "-e", "--ntasks", "-n", "--cpus-per-task"):
        value = args.pop(0)
    else:
        continue
    files[opt.lstrip("-")[0]] = value
env = os.environ
expand = {{"%A": env.get("SLURM_ARRAY_JOB_ID", env["SLURM_JOB_ID"]),
          "%a": env.get("SLURM_ARRAY_TASK_ID", "0"), "%j": env["SLURM_JOB_ID"], "%t": "0"}}
for stream, key in ((1, "o"), (2, "e")):
    if key in files:
        path = files[key]
        for k, v in expand.items():
            path = path.replace(k, v)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, stream)
        if "e" not in files and stream == 1:
            os.dup2(fd, 2)
os.execvp(args[0], args)
"""


class SlurmStub:
    """The stub executables and what they recorded; `kill_all()` ends the tasks still running."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "bin"
        self.state = tmp_path / "slurm-state"
        self.bin.mkdir(parents=True)
        (self.state / "jobs").mkdir(parents=True)
        head = _COMMON.format(python=sys.executable, state=str(self.state))
        for name, body in [
            ("sbatch", _SBATCH),
            ("_stub_task", _TASK),
            ("sacct", _SACCT),
            ("squeue", _SQUEUE),
            ("scancel", _SCANCEL),
            ("srun", _SRUN),
        ]:
            path = self.bin / name
            path.write_text(head + body.format())
            path.chmod(0o755)

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"}

    def refuse(self, message: str) -> None:
        """From now on sbatch rejects every job with `message`."""
        (self.state / "refuse").write_text(message)

    def sbatch_calls(self) -> list[dict]:
        path = self.state / "sbatch.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def task_states(self) -> dict[str, str]:
        jobs = self.state / "jobs"
        return {p.name: p.read_text() for p in sorted(jobs.iterdir()) if not p.suffix}

    def kill_all(self) -> None:
        for path in (self.state / "jobs").glob("*.pid"):
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.killpg(int(path.read_text()), signal.SIGKILL)
