"""`python -m dabo_tf ...`: the same command as the installed `dabo-tf` (see `dabo_tf.cli`)."""

from dabo_tf.cli import main

main()
