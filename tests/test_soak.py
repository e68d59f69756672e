"""The chaos soak: one `fit` interrupted again and again at seeded random moments (SIGKILL, SIGTERM
and SIGINT; in training steps, in validation, inside checkpoint writes, and from outside at any
moment), resumed with `--ckpt_path=last` after each, ends with the weights of an uninterrupted
run, bit for bit, and a run folder that is never left broken. Once in one process, once under
2-process DDP (where one rank may be killed alone).

    .venv/bin/python -m pytest -m slow tests/test_soak.py -s

Environment: `SOAK_SEED` replays a soak (the seed is printed at the start and in the tally);
`SOAK_INTERRUPTIONS` (30) and `SOAK_DDP_INTERRUPTIONS` (10) set the counts; `SOAK_TIME_LIMIT`
(seconds per soak, 1500) bounds the time: once past it no new interruption starts, and the soak
fails if its count was not reached.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from helpers import smoke_args
from helpers.chaos import SAVE, TRAIN, VALIDATION
from helpers.cli import cli_command, cli_env, group_gone
from helpers.signal_at import signal_at

from vit_lightning.cli import main

SIGNALS = ("SIGKILL", "SIGTERM", "SIGINT")
KINDS = (TRAIN, VALIDATION, SAVE, "outside")  # what the moment is steered at
RUN_TIMEOUT = float(os.environ.get("SOAK_RUN_TIMEOUT", 240))  # one start; longer is a hang
TIME_LIMIT = float(os.environ.get("SOAK_TIME_LIMIT", 1500))
EXIT = {"SIGTERM": 143, "SIGINT": 130}  # once the run is training; SIGKILL: killed


@dataclass(frozen=True)
class Setup:
    """One soak's run: steps per epoch, epochs and the mid-epoch save interval fix its schedule."""

    name: str
    args: tuple[str, ...]
    steps_per_epoch: int
    epochs: int
    every: int
    ranks: int = 1

    @property
    def steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def fit_args(self, root: Path) -> list[str]:
        every = f"--last_checkpoint.every_n_train_steps={self.every}"
        return smoke_args("fit", root, *self.args, every, "--ckpt_path=last")


_TINY = (
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.num_sanity_val_steps=0",
    "--data.val_size=96",  # 3 validation batches of 32 (2 per rank under DDP)
    "--data.batch_size=32",
    "--trainer.max_epochs=3",
)
ONE = Setup("one process", (*_TINY, "--data.train_size=192"), steps_per_epoch=6, epochs=3, every=2)
DDP = Setup(
    "2-process DDP",
    (*_TINY, "--data.train_size=256", "--trainer.strategy=ddp", "--trainer.devices=2"),
    steps_per_epoch=4,  # 256 / (32 x 2 ranks)
    epochs=3,
    every=2,
    ranks=2,
)


@dataclass
class Interruption:
    """One planned moment and what happened."""

    kind: str  # how the moment was steered (KINDS)
    sig: str
    rank: int  # the rank that got the signal, or -1 for every process of the job
    resumed_from: int  # global step of the checkpoint the run started from
    fell_in: str = ""  # the phase the signal landed in
    detail: str = ""
    exit_codes: list[int | None] = field(default_factory=list)
    completed: bool = False  # the fit ran to its end all the same
    problems: list[str] = field(default_factory=list)


@dataclass
class Tally:
    setup: str
    seed: int
    interruptions: list[Interruption] = field(default_factory=list)
    resumes: int = 0
    rounds: int = 0  # fits run to their end (each compared with the uninterrupted run)
    missed: int = 0  # starts whose planned moment never came: the run finished first
    bytes_compared: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        done = self.interruptions
        return {
            "setup": self.setup,
            "seed": self.seed,
            "interruptions": len(done),
            "by signal": dict(Counter(i.sig for i in done)),
            "by rank": dict(Counter("all" if i.rank < 0 else f"rank {i.rank}" for i in done)),
            "by target": dict(Counter(i.kind for i in done)),
            "fell in": dict(Counter(i.fell_in for i in done)),
            "resumes": self.resumes,
            "completed runs compared": self.rounds,
            "missed moments (run finished first)": self.missed,
            "bytes compared": self.bytes_compared,
            "failures": len(self.failures),
            "seconds": round(self.seconds),
        }


# -- the run folder -------------------------------------------------------------------------


def _is_temp(path: Path) -> bool:
    return ".tmp" in path.name or path.name.endswith((".part", ".partial"))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _newest_step(root: Path) -> int:
    last = root / "checkpoints" / "last.ckpt"
    if not last.exists():
        return 0
    return torch.load(last, map_location="cpu", mmap=True, weights_only=True)["global_step"]


def _check_folder(root: Path, killed_pids: set[int]) -> list[str]:
    """What is broken in a run folder whose processes have all ended: a checkpoint that does not
    load, an invalid config.yaml, a lock still held, a temp file not from a killed save, or a file
    the template does not write."""
    problems = []
    for path in sorted((root / "checkpoints").glob("*.ckpt")):
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            assert saved["state_dict"] and saved["optimizer_states"]
        except Exception as e:
            problems.append(f"{path.name} does not load: {type(e).__name__}: {e}"[:300])
    config = root / "config.yaml"
    if config.exists():
        try:
            loaded = yaml.safe_load(config.read_text())
            assert {"trainer", "model", "data"} <= set(loaded), f"keys {sorted(loaded)}"
        except Exception as e:
            problems.append(f"config.yaml is not a valid config: {type(e).__name__}: {e}"[:300])
    lock = root / "fit.lock"
    if lock.exists():
        with open(lock) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
            except BlockingIOError:
                problems.append("fit.lock is still held after every process of the run ended")
    for name in sorted(_files(root)):
        path = root / name
        if _is_temp(path):
            pid = "".join(c for c in path.name.split(".tmp", 1)[1].split("@")[0] if c.isdigit())
            if not pid or int(pid) not in killed_pids:
                problems.append(f"temp file {name} not left by a killed process")
        elif not (
            name in ("config.yaml", "fit.lock", "results.json", "checkpoints/last.ckpt")
            or (name.startswith("checkpoints/best-") and name.endswith(".ckpt"))
        ):
            problems.append(f"unexpected file {name}")
    return problems


def _bits(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()


def _compare(a: object, b: object, where: str, diffs: list[str]) -> int:
    """Bytes of tensors compared bit for bit between `a` and `b`; differences go to `diffs`."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
            diffs.append(f"{where}: {type(b).__name__} {getattr(b, 'shape', '')} vs {a.shape}")
        elif _bits(a) != _bits(b):
            diffs.append(f"{where}: values differ")
        return a.numel() * a.element_size()
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            diffs.append(f"{where}: keys {sorted(map(str, set(a) ^ set(b)))} on one side only")
        return sum(_compare(a[k], b[k], f"{where}.{k}", diffs) for k in a if k in b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        return sum(
            _compare(x, y, f"{where}[{i}]", diffs)
            for i, (x, y) in enumerate(zip(a, b, strict=True))
        )
    if a != b:
        diffs.append(f"{where}: {b!r} vs {a!r}"[:200])
    return 0


COMPARED = ("epoch", "global_step", "state_dict", "optimizer_states", "lr_schedulers")


def _compare_runs(straight: Path, root: Path, tally: Tally) -> list[str]:
    """Differences between a finished soak run and the uninterrupted one: the files, and the
    weights, optimizer state, schedule and RNG state of every checkpoint, bit for bit."""
    diffs = []
    if _files(root) != _files(straight):
        diffs.append(f"files {sorted(_files(root) ^ _files(straight))} in one run only")
    for name in sorted(_files(straight) & _files(root)):
        if not name.endswith(".ckpt"):
            continue
        a = torch.load(straight / name, map_location="cpu", weights_only=True)
        b = torch.load(root / name, map_location="cpu", weights_only=True)
        for key in COMPARED:
            tally.bytes_compared += _compare(a[key], b[key], f"{name}:{key}", diffs)
        rng = "RNGState"
        tally.bytes_compared += _compare(a["callbacks"][rng], b["callbacks"][rng], name, diffs)
    return diffs


# -- one start of the fit -------------------------------------------------------------------


def _events(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split(" ", 4) for line in path.read_text().splitlines() if line.count(" ") >= 3]


class Soak:
    """Interrupts fits of `setup` at seeded moments, resuming after each, in a row of run folders:
    a folder whose fit completes is compared with the uninterrupted run, and the next
    interruption starts a new folder."""

    def __init__(self, setup: Setup, tmp: Path, seed: int) -> None:
        self.setup, self.tmp, self.rng = setup, tmp, random.Random(seed)
        self.tally = Tally(setup.name, seed)
        self.starts = 0
        self.broken = ""  # why the soak stopped early
        self.kills = 0  # SIGKILLs planned at a chosen rank
        self.step_seconds, self.startup_seconds = 1.0, 10.0  # measured by the straight run

    def start(self, root: Path, chaos: list[str]) -> tuple[subprocess.Popen, Path, Path]:
        self.starts += 1
        events = self.tmp / "events" / f"{self.starts:03d}.log"
        log = self.tmp / "logs" / f"{self.starts:03d}.txt"
        events.parent.mkdir(exist_ok=True)
        log.parent.mkdir(exist_ok=True)
        args = [*self.setup.fit_args(root), "--trainer.callbacks+=helpers.chaos.Chaos"]
        args += [f"--trainer.callbacks.events={events}", *chaos]
        with open(log, "w") as out:
            proc = subprocess.Popen(
                cli_command(*args),
                env=cli_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: every rank can be found
            )
        return proc, events, log

    def finish(self, proc: subprocess.Popen, log: Path) -> tuple[int | None, str]:
        """Waits for the run and every process it started; kills them after RUN_TIMEOUT."""
        problem = ""
        try:
            proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            problem = f"hang: rank 0 still running after {RUN_TIMEOUT:.0f} s (log {log})"
        if not problem and not group_gone(proc.pid, timeout=60):
            problem = f"hang: a process of the run outlived rank 0 by 60 s (log {log})"
        if not group_gone(proc.pid, 0):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            group_gone(proc.pid, 30)
        proc.wait()
        return proc.returncode, problem

    def straight(self) -> Path:
        """The uninterrupted run, and the timing the outside signals are spread over."""
        root = self.tmp / "straight"
        began = time.time()
        proc, events, log = self.start(root, [])
        rc, problem = self.finish(proc, log)
        assert rc == 0 and not problem, f"{problem} exit {rc}: {log.read_text()[-3000:]}"
        times = {e[3]: float(e[0]) for e in _events(events) if e[1] == "0"}
        self.startup_seconds = times["start"] - began
        self.step_seconds = (times["end"] - times["start"]) / self.setup.steps
        return root

    def plan(self, kind: str, sig: str, step: int) -> tuple[list[str], int]:
        """The Chaos arguments for a moment of `kind` after global step `step`, and the rank to
        signal (-1: every process of the job)."""
        s, rng = self.setup, self.rng
        rank = 0
        if sig == "SIGKILL" and kind != SAVE:  # only rank 0 writes; a kill alternates from rank 1
            self.kills += 1
            rank = self.kills % s.ranks
        if kind == "outside":
            return [], rank if rng.random() < 0.7 else -1  # one process, or the whole job
        if kind == TRAIN:
            at, extra = rng.randrange(step, s.steps), {"delay": rng.uniform(0, self.step_seconds)}
        elif kind == VALIDATION:
            at = rng.randrange(step // s.steps_per_epoch, s.epochs)
            batches = -(-96 // (32 * s.ranks))  # --data.val_size / per-rank batches of 32
            extra = {"batch": rng.randrange(batches), "delay": rng.uniform(0, self.step_seconds)}
        else:  # the k-th write of this start: mid-epoch saves to come, and >= 1 per epoch end
            ahead = range(step + 1, s.steps + 1)
            mid = [t for t in ahead if t % s.every == 0 and t % s.steps_per_epoch]
            writes = len(mid) + s.epochs - step // s.steps_per_epoch
            at, extra = rng.randint(1, max(1, writes)), {"fraction": rng.uniform(0, 1.05)}
        args = [f"--trainer.callbacks.phase={kind}", f"--trainer.callbacks.at={at}"]
        args += [f"--trainer.callbacks.{k}={v}" for k, v in extra.items()]
        args += [f"--trainer.callbacks.sig={sig}", f"--trainer.callbacks.rank={rank}"]
        return args, rank

    def interrupt(self, root: Path, kind: str, sig: str, killed: set[int]) -> Interruption | None:
        """One start with one planned signal. None when the run finished before the moment."""
        step = _newest_step(root)
        chaos, rank = self.plan(kind, sig, step)
        it = Interruption(kind, sig, rank, step)
        proc, events, log = self.start(root, chaos)
        if step:
            self.tally.resumes += 1
        if kind == "outside":
            remaining = self.startup_seconds + (self.setup.steps - step) * self.step_seconds
            self._send_from_outside(proc, events, it, time.time() + self.rng.uniform(0, remaining))
        rc, problem = self.finish(proc, log)
        seen = _events(events)
        it.exit_codes = [rc]
        fired = [e for e in seen if e[3] == "fire"]
        if fired:
            _, it.fell_in, *detail = fired[0][4].split(" ", 2)
            it.detail = " ".join(detail)
        if sig == "SIGKILL" and it.fell_in:  # a killed rank's peer may die mid-save too
            killed.update(int(e[2]) for e in seen)
            killed.add(proc.pid)
        if not it.fell_in:
            self.tally.missed += 1
            if rc != 0 or problem:  # the fit itself fails: nothing more to learn here
                self.broken = f"exit {rc} {problem} with no signal sent ({log})"
            return None
        it.completed = rc == 0
        it.problems += [problem] if problem else []
        it.problems += self._check_exit(it, rc, "end" in {e[3] for e in seen}, log)
        it.problems += _check_folder(root, killed)
        return it

    def _send_from_outside(
        self, proc: subprocess.Popen, events: Path, it: Interruption, when: float
    ) -> None:
        while time.time() < when and proc.poll() is None:
            time.sleep(0.02)
        if proc.poll() is not None:
            return  # finished first: a missed moment
        seen = _events(events)
        pids = {int(e[1]): int(e[2]) for e in seen}
        if it.rank not in pids:
            it.rank = 0 if it.rank > 0 else it.rank  # that rank has not started yet
        mine = [e for e in seen if e[3] == "phase" and int(e[1]) == max(it.rank, 0)]
        phase, _, detail = mine[-1][4].partition(" ") if mine else ("startup", "", "")
        if it.rank < 0:
            os.killpg(proc.pid, getattr(signal, it.sig))  # a scheduler's way, or Ctrl-C
        else:
            os.kill(pids.get(it.rank, proc.pid), getattr(signal, it.sig))
        it.fell_in, it.detail = phase, f"{detail} (from outside)".strip()

    def _check_exit(self, it: Interruption, rc: int | None, ended: bool, log: Path) -> list[str]:
        """The exit status a signal at that moment must give, and no traceback for SIGTERM or
        SIGINT once training has started."""
        signum = getattr(signal, it.sig)
        if it.fell_in == "startup" or ended:
            # before the handlers (the signal's own action), or after training (nothing to save)
            expected = {-signum, 1, 0 if ended else -signum, EXIT.get(it.sig, -signum)}
        elif it.sig == "SIGKILL":
            expected = {-9} if it.rank != 1 else {-9, 1}  # rank 0 stops when rank 1 dies
        else:
            expected = {EXIT[it.sig]}
        problems = [] if rc in expected else [f"exit {rc}, expected one of {sorted(expected)}"]
        text = log.read_text(errors="replace")
        if it.sig != "SIGKILL" and it.fell_in not in ("startup", "end") and "Traceback" in text:
            problems.append("a traceback")
        return [f"{p} ({log})" for p in problems]

    def run(self, count: int) -> Tally:
        began = time.monotonic()
        straight = self.straight()
        # each kind and each signal in proportion, in a seeded order
        kinds = [KINDS[i % len(KINDS)] for i in range(count)]
        sigs = [SIGNALS[i % len(SIGNALS)] for i in range(count)]
        self.rng.shuffle(kinds)
        self.rng.shuffle(sigs)
        plans = list(zip(kinds, sigs, strict=True))
        while plans and time.monotonic() - began < TIME_LIMIT:
            self.tally.rounds += 1
            root, killed, completed = self.tmp / f"run{self.tally.rounds}", set(), False
            while plans and not completed and time.monotonic() - began < TIME_LIMIT:
                if _newest_step(root) >= self.setup.steps:
                    break  # saved at the end, then stopped: no moment left but the resume's
                it = self.interrupt(root, *plans[0], killed)
                if self.broken:
                    self.tally.failures.append(self.broken)
                    self.tally.seconds = time.monotonic() - began
                    return self.tally
                if it is None:
                    completed = True  # the fit ended before the moment
                    continue
                plans.pop(0)
                self.tally.interruptions.append(it)
                n = len(self.tally.interruptions)
                self.tally.failures += [f"#{n} {it.sig} in {it.fell_in}: {p}" for p in it.problems]
                completed = it.completed
                print(f"  #{n} {it.sig} -> rank {it.rank}, {it.kind}: in {it.fell_in} "
                      f"{it.detail}, exit {it.exit_codes}, {it.problems or 'ok'}", flush=True)  # fmt: skip
            self._finish_round(root, straight, completed)
        if plans:
            self.tally.failures.append(
                f"{len(plans)} of {count} interruptions left undone at SOAK_TIME_LIMIT="
                f"{TIME_LIMIT:.0f} s"
            )
        self.tally.seconds = time.monotonic() - began
        return self.tally

    def _finish_round(self, root: Path, straight: Path, completed: bool) -> None:
        """Resumes until the fit completes (no more signals), then compares with the straight
        run: files, weights and every tensor of every checkpoint."""
        if not completed:
            self.tally.resumes += 1
            proc, _, log = self.start(root, [])
            rc, problem = self.finish(proc, log)
            if rc != 0 or problem:
                self.tally.failures.append(f"resume without signals: exit {rc} {problem} ({log})")
                return
        found = _check_folder(root, set()) + _compare_runs(straight, root, self.tally)
        self.tally.failures += [f"completed {root.name}: {p}" for p in found]


def _report(tally: Tally, tmp: Path) -> None:
    summary = tally.summary()
    path = tmp / "soak-tally.json"
    full = {**summary, "failure list": tally.failures}
    full["interruption list"] = [asdict(i) for i in tally.interruptions]
    path.write_text(json.dumps(full, indent=1))
    print(f"\nchaos soak, {tally.setup}: SOAK_SEED={tally.seed}")
    for key, value in summary.items():
        print(f"  {key}: {value}")
    for failure in tally.failures:
        print(f"  FAILURE {failure}")
    print(f"  tally written to {path}", flush=True)


def _seed() -> int:
    seed = int(os.environ.get("SOAK_SEED", random.SystemRandom().randrange(10**6)))
    print(f"\nSOAK_SEED={seed}", flush=True)
    return seed


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 30 or 10 interruptions, each a fit and a resume
@pytest.mark.parametrize(
    "setup,count",
    [
        (ONE, int(os.environ.get("SOAK_INTERRUPTIONS", 30))),
        (DDP, int(os.environ.get("SOAK_DDP_INTERRUPTIONS", 10))),
    ],
    ids=["one-process", "ddp"],
)
def test_a_fit_interrupted_at_random_moments_ends_bit_identical_with_no_folder_broken(
    tmp_path, setup, count
):
    tally = Soak(setup, tmp_path, _seed()).run(count)
    _report(tally, tmp_path)
    fell = Counter(i.fell_in for i in tally.interruptions)
    assert not tally.failures, f"{len(tally.failures)} failures; replay with SOAK_SEED={tally.seed}"
    assert len(tally.interruptions) >= count
    if count >= 2 * len(KINDS):  # steered there: a few must land
        assert fell[SAVE] and fell[VALIDATION], fell
    if setup.ranks > 1 and count >= 6:
        assert any(i.sig == "SIGKILL" and i.rank == 1 for i in tally.interruptions)


# -- what the soak found, pinned by fast tests ------------------------------------------------


class _Killed(Exception):
    """Stands in for a kill -9 in an in-process fit: the save in progress never completes."""


_TWO_EPOCHS = (*ONE.args, "--trainer.max_epochs=2")


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 2-epoch fit whose epoch 1 beats epoch 0: both write a best checkpoint."""
    root = tmp_path_factory.mktemp("two_epochs")
    main(smoke_args("fit", root, *_TWO_EPOCHS))
    assert list((root / "checkpoints").glob("best-epoch001-*"))
    return root


def _assert_same_run(straight: Path, resumed: Path) -> None:
    tally = Tally("", 0)
    assert _files(resumed) == _files(straight)
    assert _compare_runs(straight, resumed, tally) == [] and tally.bytes_compared > 0


def test_a_resume_after_a_kill_between_the_epoch_end_saves_leaves_a_straight_runs_files(
    two_epochs, tmp_path, monkeypatch
):
    """Epoch 1's best checkpoint is written, then the run dies writing last.ckpt. The resumed
    run repeats epoch 1 and saves that best checkpoint again: under its own name, replacing the
    dead attempt's file, not beside it as `-v1` while the first copy stays forever."""
    save = torch.save

    def dies_at_epoch_1s_last(obj, f, *a, **kw):
        if ".last.ckpt" in f.name and obj["epoch"] == 1:
            raise _Killed
        save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", dies_at_epoch_1s_last)
    with pytest.raises(_Killed):
        main(smoke_args("fit", tmp_path, *_TWO_EPOCHS, "--ckpt_path=last"))
    monkeypatch.setattr(torch, "save", save)
    main(smoke_args("fit", tmp_path, *_TWO_EPOCHS, "--ckpt_path=last"))
    _assert_same_run(two_epochs, tmp_path)


def test_a_signal_in_an_epochs_last_batch_keeps_its_validation_and_checkpoints(
    two_epochs, tmp_path
):
    """Saved right after an epoch's last batch, the run resumed past that epoch's validation
    (Lightning starts the next epoch from such a checkpoint): no val/acc for it, no best
    checkpoint, no epoch-end save. The signal now stops the run in or after that validation."""
    last = 2 * ONE.steps_per_epoch - 1  # the final epoch's last batch
    stop = signal_at(last, "SIGTERM")
    with pytest.raises(SystemExit) as stopped:
        main(smoke_args("fit", tmp_path, *_TWO_EPOCHS, "--ckpt_path=last", *stop))
    assert stopped.value.code == 143
    main(smoke_args("fit", tmp_path, *_TWO_EPOCHS, "--ckpt_path=last"))
    _assert_same_run(two_epochs, tmp_path)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
def test_ddp_rank_1_ends_when_rank_0_is_killed_before_the_process_group_is_up(tmp_path):
    """Lightning's launcher (rank 0) starts rank 1 and then dies: SIGKILL, or a SIGTERM before
    any handler is in place. Rank 1 used to wait for it in the process group's setup, for the
    group's 30-minute timeout; it now ends with its launcher."""
    proc = subprocess.Popen(
        cli_command(*DDP.fit_args(tmp_path)),
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _children(proc.pid) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        (rank_1,) = _children(proc.pid)
        time.sleep(3)  # rank 1 is importing; rank 0 waits for it in the process group's setup
        proc.kill()
        proc.wait()
        assert group_gone(proc.pid, timeout=30), f"rank 1 (PID {rank_1}) outlived rank 0"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
