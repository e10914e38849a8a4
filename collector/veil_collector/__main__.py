"""``python -m veil_collector``: the ``veil`` command line, for environments without the console script."""

from veil_collector.cli import main

if __name__ == "__main__":
    main()
