"""`python -m musicdiff.sweep`: same as the `musicdiff-sweep` console script."""

from musicdiff.cli.sweep import main

if __name__ == "__main__":
    main()
