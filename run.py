"""`python run.py ...`: the same command as the installed `dabo-tf` (see `dabo_tf.cli`)."""

from dabo_tf.cli import main

if __name__ == "__main__":
    main()
