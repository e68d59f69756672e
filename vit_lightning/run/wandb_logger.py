"""The W&B logger: when to log offline, and which run a fit writes to.

- Credentials and the offline policy: `wandb_has_credentials`, `wandb_url`, `wandb_server_problem`
  (a real API request with the key, a few seconds in all), and `configure_logger`, which the CLI
  applies to every WandbLogger in the config. `WandbLogger` also logs offline when `wandb.init`
  itself fails after a passing probe.
- Run-id persistence: `wandb_run_id` keeps one W&B run across requeues (`RUN_ID_FILE`).
- Reading runs back is `vit_lightning.analysis.runs`'s.
- `finish_run` closes the run a WandbLogger leaves open.
"""

from __future__ import annotations

import base64
import json
import logging
import netrc
import os
import secrets
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import loggers
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from vit_lightning.errors import ConfigError, UserError
from vit_lightning.run.files import is_local, write_file

RUN_ID_FILE = "wandb-run-id"  # in default_root_dir
PROBE_TIMEOUT = 5.0  # s, DNS to answer; wandb.init would wait 90 s, then fail the run
# the first request wandb itself makes: it needs the server's API up and the key accepted
_VIEWER_QUERY = json.dumps({"query": "query Viewer { viewer { id } }"}).encode()
_CHECK_KEY = "check WANDB_API_KEY or run `wandb login`"
_OFFLINE_MODES = ("offline", "dryrun", "disabled")  # wandb's modes that never reach a server
# Lightning's logger prints to stderr; a Python warning would vanish under PYTHONWARNINGS=ignore
_log = logging.getLogger("lightning.pytorch")


def wandb_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def _api_key() -> str | None:
    """The key W&B would log in with: WANDB_API_KEY, else the ~/.netrc entry for the server."""
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    try:
        entry = netrc.netrc().authenticators(urlparse(wandb_url()).hostname or "")
    except (FileNotFoundError, netrc.NetrcParseError):
        return None
    return entry[2] if entry else None


def wandb_has_credentials() -> bool:
    """True if W&B could log in without prompting: an API key in the environment or in ~/.netrc."""
    return _api_key() is not None


def wandb_server_problem(timeout: float = PROBE_TIMEOUT) -> str | None:
    """What stops an online W&B run now, or None when the server answers and accepts the key.

    Asks the server's GraphQL API who the key belongs to. The request runs in a daemon thread so
    that `timeout` bounds it all (name lookup, connect, a server that accepts but never answers
    or trickles its answer); a socket timeout alone bounds only each step.
    """
    answer: list[str | None] = []
    thread = threading.Thread(target=lambda: answer.append(_ask_viewer(timeout)), daemon=True)
    thread.start()
    thread.join(timeout)
    return answer[0] if answer else f"does not answer within {timeout:g} s"


def _ask_viewer(timeout: float) -> str | None:
    url, key = wandb_url().rstrip("/") + "/graphql", _api_key()
    headers = {"Content-Type": "application/json"}
    if key:  # wandb's own scheme: HTTP basic auth, user "api"
        headers["Authorization"] = "Basic " + base64.b64encode(f"api:{key}".encode()).decode()
    request = urllib.request.Request(url, data=_VIEWER_QUERY, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.load(response)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return f"rejects the API key (HTTP {e.code} {e.reason}; {_CHECK_KEY})"
        hint = " (is WANDB_BASE_URL the server's address?)" if e.code == 404 else ""
        return f"answers HTTP {e.code} {e.reason}{hint}"
    except ValueError:  # not JSON: not a W&B API at that address
        return f"does not answer {url} as a W&B server does (check WANDB_BASE_URL)"
    except OSError as e:  # refused, unknown host, reset, socket timeout (URLError is an OSError)
        if isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError):
            # the same answer as the join's deadline, whichever of the two fires first
            return f"does not answer within {timeout:g} s"
        return f"is unreachable ({getattr(e, 'reason', e)})"
    data = body.get("data") if isinstance(body, dict) else None
    if key and isinstance(data, dict) and data.get("viewer") is None:
        return f"rejects the API key (no user has it; {_CHECK_KEY})"
    return None


@rank_zero_only
def _warn_offline(why: str, root: str | Path) -> None:
    """Tells the researcher, whatever the warnings filters, that the run logs offline."""
    _log.warning(f"{why}: {_offline_note(root)}")


def _offline_note(root: str | Path) -> str:
    return (
        f"logging offline to {root}/wandb instead. Upload later with "
        f"`wandb sync {root}/wandb/offline-run-*`."
    )


def _offline_mode(init_args: Any) -> bool:
    return (init_args.get("mode") or os.environ.get("WANDB_MODE")) in _OFFLINE_MODES


def sweep_trial_root(root: str | None) -> str | None:
    """`<root>/<WANDB_RUN_ID>` for a fit that a W&B sweep agent started, else None.

    The agent starts every trial with the same command line, so the trials would share one
    default_root_dir: the second would find the first's checkpoints and config.yaml (and refuse
    to overwrite them). Each trial gets the folder of its W&B run instead, which also keeps a
    trial that the agent reruns with the same id resumable.
    """
    run_id, sweep = os.environ.get("WANDB_RUN_ID"), os.environ.get("WANDB_SWEEP_ID")
    root = (root or ".").rstrip("/")
    if not (run_id and sweep) or root.rpartition("/")[2] == run_id:
        return None
    return f"{root}/{run_id}"  # "/" for a URL root too


def configure_logger(
    init_args: Any, root: str, subcommand: str | None, resuming: bool
) -> str | None:
    """Fill in a WandbLogger's init_args (a jsonargparse Namespace) in place, before it is built.

    - `save_dir` defaults to `root` (W&B's own default is the cwd, not the run directory);
    - offline when there are no credentials (unless WANDB_MODE=online), or when the server does
      not answer, answers with an error or rejects the key (`wandb_server_problem`), so a run
      never waits on a login or a server; only rank 0 asks, as only rank 0 logs;
    - the run id, unless the user set `id` or `version`: a sweep agent's WANDB_RUN_ID wins; a fit
      gets `wandb_run_id(root, resuming)`, so a resumed fit keeps its run and a fresh one does not.

    Returns the fit's run id for `save_run_id`, or None when the id is not the project's to keep.
    """
    if init_args.get("save_dir") in (None, "."):  # W&B writes local files only
        init_args.save_dir = root if is_local(root) else "."
    if rank_zero_only.rank == 0:  # the only rank that writes W&B files
        check_wandb_dir(init_args.save_dir)
    if not wandb_has_credentials() and os.environ.get("WANDB_MODE") != "online":
        init_args.offline = True
    elif rank_zero_only.rank == 0 and not init_args.get("offline") and not _offline_mode(init_args):
        problem = wandb_server_problem()
        if problem is not None:
            _warn_offline(f"W&B server {wandb_url()} {problem}", root)
            init_args.offline = True
    if init_args.get("id") or init_args.get("version"):
        return None  # the user's choice
    if os.environ.get("WANDB_RUN_ID"):  # set by a sweep agent: its run wins
        init_args.id = os.environ["WANDB_RUN_ID"]
    elif subcommand == "fit":
        init_args.id = wandb_run_id(root, resuming)
        init_args.resume = "allow"
        return init_args.id
    return None


_WANDB_DIR_FIX = (
    "make it writable or remove it, or set --trainer.logger.init_args.save_dir to a writable "
    "folder (or --trainer.logger=false for no W&B)"
)


def check_wandb_dir(save_dir: str | Path) -> None:
    """W&B writes its run folders in `<save_dir>/wandb`; one it cannot write (read-only, a file,
    another user's) is named at startup with the fix, not as wandb.init's 60-line traceback."""
    folder = Path(save_dir).expanduser() / "wandb"
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p.is_symlink())
    if not existing.is_dir():
        raise ConfigError(
            f"W&B cannot write its files in {folder}: {existing} is not a folder; {_WANDB_DIR_FIX}"
        )
    try:  # a folder, as wandb.init makes one per run
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=existing))
    except OSError as e:
        raise ConfigError(
            f"W&B cannot write its files in {folder} ({e.strerror}: {existing}); {_WANDB_DIR_FIX}"
        ) from e


class WandbLogger(loggers.WandbLogger):
    """Lightning's WandbLogger, except that a run `wandb.init` cannot start online (the server
    failed after the probe, or timed out) is logged offline with a warning, not a failed run.

    Offline is asked for the way Lightning's own `offline=True` asks for it, via WANDB_MODE. The
    wandb session read its environment at the failed start, so it is torn down first.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # jsonargparse follows this super() call to all of Lightning's arguments (wandb.init's
        # too); without it, it would look for their use in the `experiment` below, and miss them
        super().__init__(*args, **kwargs)

    @property
    def experiment(self) -> Any:
        import wandb

        try:
            return super().experiment
        except (wandb.Error, TimeoutError) as e:
            if os.environ.get("WANDB_MODE") in _OFFLINE_MODES:
                raise  # offline failed too: not a server problem
            _warn_offline(
                f"W&B could not start an online run on {wandb_url()} ({e})", self.save_dir
            )
            wandb.teardown()
            os.environ["WANDB_MODE"] = "offline"
            return super().experiment
        except OSError as e:  # its folder became unwritable after the startup check
            raise UserError(
                f"W&B cannot write its files in {Path(self.save_dir or '.') / 'wandb'} ({e}); "
                + _WANDB_DIR_FIX
            ) from e


def wandb_run_id(root: str | Path, resuming: bool) -> str | None:
    """The W&B run id of the run in `root`: kept when resuming, new otherwise.

    Rank 0 persists it in `<root>/wandb-run-id` (`save_run_id`), so a requeued or resumed job keeps
    writing to the same W&B run. Other ranks only read it (they log nothing).
    """
    if resuming and not is_local(root):  # a remote run folder (fsspec URL)
        fs, path = get_filesystem(str(root)), f"{str(root).rstrip('/')}/{RUN_ID_FILE}"
        return (fs.cat_file(path).decode().strip() or None) if fs.isfile(path) else None
    path = Path(root) / RUN_ID_FILE
    if resuming and path.is_file():
        return path.read_text().strip() or None
    if rank_zero_only.rank != 0:
        return None
    return secrets.token_hex(4)  # W&B ids: lowercase letters and digits


def save_run_id(root: str | Path, run_id: str) -> None:
    """Persist a fit's run id for `wandb_run_id` (rank 0 only); the CLI calls it once training
    has started, so a run that fails to start leaves no file behind."""
    if rank_zero_only.rank != 0:
        return
    path = Path(root) / RUN_ID_FILE if is_local(root) else f"{str(root).rstrip('/')}/{RUN_ID_FILE}"
    if isinstance(path, Path) and path.is_file() and path.read_text().strip() == run_id:
        return
    write_file(path, f"{run_id}\n".encode())


def finish_run() -> None:
    """Close the run a WandbLogger leaves open, so a later run in this process starts afresh.

    Also stops W&B's service, so the run files are complete on return: `finish()` alone can
    return before the offline writer has flushed (seen as missing records).
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
        wandb.teardown()


# JSON has no NaN or infinity: the inspector writes a logged nan or inf as one of these strings
