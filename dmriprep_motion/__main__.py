"""Allow ``python -m dmriprep_motion``."""

from dmriprep_motion.cli.run import main

if __name__ == "__main__":
    main()
