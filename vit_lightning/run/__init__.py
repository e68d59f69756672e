"""The run machinery: what keeps a run's files, folder and Trainer safe. Nothing here is a
research choice; a recipe never needs to open it.

`files` (atomic writes, local or remote paths), `checkpoints` (names, `--ckpt_path`, checkpoint
IO), `run_dir` (one live fit per folder, a fresh fit never overwrites), `trainer` (the Trainer
every subcommand runs), `settings` (checks of the command line and config files), `wandb_logger`
(the W&B logger and its offline policy) and `export` (the `export` subcommand).
"""
