"""Inputs a user brings that jsonargparse or the files could silently misread: a data class
switched on top of a config written for another one."""

import pytest
from helpers import smoke_args

from vit_lightning.cli import main

FMNIST = "--data=vit_lightning.data.FashionMNISTDataModule"


def test_switching_the_data_class_keeps_the_values_both_take_and_says_so(tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")  # the run stops right after parsing, having written nothing
    args = smoke_args("fit", not_a_folder, "--trainer.logger=false", FMNIST)
    with pytest.warns(UserWarning, match="keeps what") as record, pytest.raises(SystemExit):
        main(args)
    (msg,) = [str(w.message) for w in record if "keeps what" in str(w.message)]
    assert "val_size=256" in msg and "batch_size=64" in msg and "smoke.yaml" in msg
    assert f"pass --data=null before {FMNIST}" in msg
    # the way around: --data=null first starts from the class's own defaults
    with pytest.raises(SystemExit) as exc:
        main(smoke_args("fit", tmp_path, "--data=null", FMNIST, "--print_config"))
    assert exc.value.code == 0 and "    val_size: 5000\n" in capsys.readouterr().out
