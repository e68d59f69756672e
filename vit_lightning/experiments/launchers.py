"""How multirun's runs are started: one after another, one per GPU, or as a SLURM job array.

Every launcher runs each run through `run_one`, which owns the run's `status.json` and `run.log`
and makes a rerun idempotent: a run that is done is skipped, a fit that succeeded is not
repeated, and an unfinished fit resumes (its command line says `--ckpt_path=last`).

- A run's processes die with the launcher (Linux: `PR_SET_PDEATHSIG`), so a launcher killed
  outright (`kill -9`, the OOM killer) leaves no fit holding the run folder's lock; a rerun resumes
  it from its last checkpoint. SIGTERM or SIGINT to a local launcher instead stops the run in
  progress after it saved, starts no other, and exits 128 + the signal (`Stopped`).
- The SLURM launcher records each task's job id in its run's `status.json` (`slurm_job`) at
  submission; a rerun while that job is still pending or running (per `sacct`) submits nothing
  for that run and waits for the job instead.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vit_lightning.errors import ConfigError, UserError
from vit_lightning.experiments.multirun import Experiment, Run
from vit_lightning.run.files import write_file

STATUS, LOG = "status.json", "run.log"
DONE, FAILED, RUNNING, PENDING, SKIPPED = "done", "failed", "running", "pending", "skipped"
# exit codes of a run stopped by a signal it saved for (Preemption: 128 + signal): unfinished
STOPPED = {128 + s for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}

# sacct states of a job that may still run the task (the rest: it ran, or SLURM forgot it)
SLURM_LIVE = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
    "RESIZING", "SUSPENDED", "PREEMPTED", "SIGNALING", "STAGE_OUT", "READY",
}  # fmt: skip
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

Launch = Callable[[Experiment], list[Run]]  # -> the runs that failed


class Stopped(Exception):
    """A local launcher stopped by SIGTERM or SIGINT: the run in progress saved and is pending,
    the later ones did not start. `failed` lists the runs that had failed before."""

    def __init__(self, signum: int, failed: list[Run]) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum, self.failed = signum, failed


def read_status(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / STATUS).read_text())
    except (OSError, ValueError):
        return {}


def _write_status(folder: Path, status: dict[str, Any]) -> None:
    write_file(folder / STATUS, (json.dumps(status, indent=2) + "\n").encode())


class Children:
    """The run processes alive in this launcher. SIGTERM is passed on to them (they save and stop);
    SIGINT reaches them from the terminal itself (one process group); either stops new runs."""

    def __init__(self) -> None:
        self.procs: set[subprocess.Popen] = set()
        self.stopping = False
        self.signum = signal.SIGTERM
        # reentrant: the signal handler runs in the main thread, maybe while it holds the lock
        self.lock = threading.RLock()

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if not self.stopping:
            self.signum = signum
        self.stopping = True
        if signum == signal.SIGTERM:
            self.terminate()

    def terminate(self) -> None:
        with self.lock:
            for proc in list(self.procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    def call(self, args: list[str], log: Any, env: dict[str, str], ignore_usr2: bool) -> int:
        """`python -m vit_lightning *args`, output to `log`; waits by polling, so a signal handler
        may wait for the same process (Popen.wait holds a lock a handler would deadlock on)."""
        cmd = [sys.executable, "-m", "vit_lightning", *args]
        pre = _child_setup(ignore_usr2)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=pre)
        with self.lock:
            self.procs.add(proc)
            if self.stopping:  # the signal came while it started: terminate() did not see it
                proc.send_signal(signal.SIGTERM)
        try:
            while proc.poll() is None:
                time.sleep(0.2)
        finally:
            with self.lock:
                self.procs.discard(proc)
        return proc.returncode


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()  # looked up here: a forked child should only call it


def _child_setup(ignore_usr2: bool) -> Callable[[], None]:
    """The run process's setup between fork and exec: it dies with the thread that started it,
    so no fit outlives a killed launcher and keeps its run folder locked."""
    parent = os.getpid()

    def setup() -> None:
        # SLURM sends a job's --signal to every process of the step: submitit's SIGUSR2 must
        # reach only the submitit task (it stops the fit with SIGTERM), not kill the fit outright
        if ignore_usr2:
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the launcher died before prctl took effect
                os.kill(os.getpid(), signal.SIGKILL)

    return setup


def run_one(
    run: Run,
    root: Path,
    children: Children,
    env: dict[str, str] | None = None,
    slurm: bool = False,
    slurm_job: str | None = None,
) -> str:
    """Fit (unless an earlier fit of this run succeeded), then test; returns the run's state, or
    SKIPPED for a run that was already done. `slurm_job`: the array task running it."""
    folder = run.folder(root)
    before = read_status(folder)
    if before.get("state") == DONE:
        return SKIPPED
    folder.mkdir(parents=True, exist_ok=True)
    log = (folder / LOG).resolve()
    fit_done = before.get("fit_rc") == 0
    status = {"state": RUNNING, "log": str(log), "fit_rc": 0 if fit_done else None, "test_rc": None}
    if slurm_job or before.get("slurm_job"):  # a rerun asks SLURM whether it still runs
        status["slurm_job"] = slurm_job or before["slurm_job"]
    env = {**os.environ, **(env or {})}
    _write_status(folder, status)
    with open(log, "ab", buffering=0) as out:
        for stage, args in [("fit", run.fit)] * (not fit_done) + [("test", run.test)]:
            if children.stopping:  # a signal between the stages, or before the first
                status["state"] = PENDING
                _write_status(folder, status)
                return PENDING
            visible = env.get("CUDA_VISIBLE_DEVICES")
            where = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
            out.write(f"\n$ python -m vit_lightning {shlex.join(args)}{where}\n".encode())
            rc = children.call(args, out, env, ignore_usr2=slurm)
            status[f"{stage}_rc"] = rc
            if rc:
                status["state"] = PENDING if rc in STOPPED or children.stopping else FAILED
                _write_status(folder, status)
                return status["state"]
            _write_status(folder, status)
    status["state"] = DONE
    _write_status(folder, status)
    return DONE


def _report(run: Run, state: str) -> None:
    print(f"{state}: {run.name}", file=sys.stderr, flush=True)


def local(exp: Experiment) -> list[Run]:
    """One run after another; a signal (Ctrl-C, SIGTERM) stops after the run in progress saved."""
    children, failed = Children(), []
    children.install()
    for run in exp.runs:
        if children.stopping:
            break
        state = run_one(run, exp.root, children)
        _report(run, state)
        if state == FAILED:
            failed.append(run)
    if children.stopping:
        raise Stopped(children.signum, failed)
    return failed


def local_gpus(gpus: list[str]) -> Launch:
    """One run per GPU at a time, each seeing only its own (`CUDA_VISIBLE_DEVICES`)."""

    def launch(exp: Experiment) -> list[Run]:
        children, free = Children(), queue.Queue()
        children.install()
        for gpu in gpus:
            free.put(gpu)

        def one(run: Run) -> str:
            if children.stopping:
                return PENDING
            gpu = free.get()
            try:
                state = run_one(run, exp.root, children, env={"CUDA_VISIBLE_DEVICES": gpu})
            finally:
                free.put(gpu)
            _report(run, state)
            return state

        # the pool's threads start the runs and live until all are done (PR_SET_PDEATHSIG
        # follows the thread that started a process)
        with ThreadPoolExecutor(max_workers=len(gpus)) as pool:
            states = list(pool.map(one, exp.runs))
        failed = [run for run, state in zip(exp.runs, states, strict=True) if state == FAILED]
        if children.stopping:
            raise Stopped(children.signum, failed)
        return failed

    return launch


class SlurmTask:
    """An array task's function: the run's fit and test. Checkpointable for submitit: at the
    time limit (submitit's SIGUSR2) the fit is stopped with SIGTERM, so its Preemption callback
    saves last.ckpt, and submitit requeues the task, which resumes it (`--ckpt_path=last`).

    A preemption's SIGTERM reaches the fit from SLURM (and from here), and SLURM requeues the
    job itself (`--requeue`).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.children: Children | None = None

    def __call__(self, run: Run) -> str:
        import submitit

        self.children = Children()
        self.children.install()  # SIGTERM passed on; submitit keeps its SIGUSR2 handler
        job = submitit.JobEnvironment().job_id
        state = run_one(run, self.root, self.children, slurm=True, slurm_job=job)
        if state == FAILED:
            raise RuntimeError(f"{run.name} failed: see {run.folder(self.root) / LOG}")
        return state

    def checkpoint(self, run: Run) -> Any:
        import submitit

        if self.children is not None:
            self.children.stopping = True
            self.children.terminate()
            while any(p.poll() is None for p in list(self.children.procs)):
                time.sleep(0.2)
        return submitit.helpers.DelayedSubmission(SlurmTask(self.root), run)

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "children": None}


def slurm(opts: argparse.Namespace) -> Launch:
    """One job array through submitit, a task per run still to do; waits for the tasks."""
    params: dict[str, Any] = {}
    try:
        params["timeout_min"] = int(opts.slurm_time)
        gpus, cpus = int(opts.slurm_gpus_per_task), int(opts.slurm_cpus_per_task)
        params["slurm_array_parallelism"] = int(opts.slurm_parallelism)
        if opts.slurm_mem_gb is not None:
            params["mem_gb"] = float(opts.slurm_mem_gb)
    except ValueError as e:
        raise ConfigError(f"--slurm.*: {e}; give numbers (time in minutes)") from e
    params.update(cpus_per_task=cpus, tasks_per_node=1, nodes=1)
    if gpus:
        params["slurm_gpus_per_task"] = gpus
    if opts.slurm_partition:
        params["slurm_partition"] = opts.slurm_partition

    def launch(exp: Experiment) -> list[Run]:
        import submitit
        from submitit.core import utils

        folder = exp.root / "slurm" / "%j"
        statuses = [read_status(run.folder(exp.root)) for run in exp.runs]
        recorded = [s["slurm_job"] for s in statuses if s.get("state") != DONE and "slurm_job" in s]
        live = _slurm_live(recorded)
        todo, waiting = [], []  # to submit; (run, its earlier job, still queued or running)
        for run, status in zip(exp.runs, statuses, strict=True):
            if status.get("state") == DONE:
                _report(run, SKIPPED)
            elif (job_id := status.get("slurm_job")) in live:
                print(f"still in SLURM: {run.name} (job {job_id}); waiting for it", flush=True)
                waiting.append((run, submitit.SlurmJob(folder=folder, job_id=job_id)))
            else:
                todo.append(run)
        if todo:
            executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
            executor.update_parameters(name=exp.name, **params)
            # requeue: SLURM puts a preempted task back in the queue (the fit resumes from
            # last.ckpt)
            executor.update_parameters(slurm_additional_parameters={"requeue": True})
            try:
                jobs = executor.map_array(SlurmTask(exp.root), todo)
            except (utils.FailedJobError, utils.FailedSubmissionError, OSError) as e:
                raise UserError(
                    f"--launcher slurm: sbatch did not take the job array of {len(todo)} runs "
                    f"({str(e).strip() or type(e).__name__}); check --slurm.* against the "
                    "cluster (sinfo), then rerun the same command"
                ) from e
            array = jobs[0].job_id.split("_")[0]
            print(f"submitted job array {array}: {len(jobs)} tasks", flush=True)
            for run, job in zip(todo, jobs, strict=True):
                _record_job(run.folder(exp.root), job.job_id)
            waiting += zip(todo, jobs, strict=True)
        failed = []
        for run, job in waiting:
            job.wait()
            state = read_status(run.folder(exp.root)).get("state", FAILED)
            _report(run, state)
            if state != DONE:
                failed.append(run)
        return failed

    return launch


def _slurm_live(job_ids: list[str]) -> set[str]:
    """The jobs that `sacct` says may still run their task (pending, running, requeued, ...);
    one sacct call for all of them. A job sacct does not know is not live."""
    if not job_ids:
        return set()
    import submitit

    watcher = submitit.SlurmJob.watcher
    for job_id in job_ids:
        watcher.register_job(job_id)
    watcher.update()
    states = {j: watcher.get_state(j, mode="cache").split(" ")[0].upper() for j in job_ids}
    return {j for j, state in states.items() if state in SLURM_LIVE}


def _record_job(folder: Path, job_id: str) -> None:
    """`slurm_job` in the run's status, the rest kept. The task may write its own status at the
    same moment; it records the same job id itself, so either write leaves the id there."""
    folder.mkdir(parents=True, exist_ok=True)
    status = read_status(folder)
    status.setdefault("state", PENDING)
    status["slurm_job"] = job_id
    _write_status(folder, status)


def launcher(opts: argparse.Namespace) -> Launch:
    if opts.launcher == "local":
        return local
    if opts.launcher == "slurm":
        return slurm(opts)
    if opts.gpus:
        gpus = [g.strip() for g in opts.gpus.split(",") if g.strip()]
    else:
        import torch

        gpus = [str(i) for i in range(torch.cuda.device_count())]
    if not gpus:
        raise ConfigError(
            "--launcher local-gpus: no GPU found; give --gpus 0,1 or --launcher local"
        )
    return local_gpus(gpus)
