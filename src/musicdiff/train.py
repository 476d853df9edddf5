"""`python -m musicdiff.train`: same as the `musicdiff-train` console script."""

from musicdiff.cli.train import main

if __name__ == "__main__":
    main()
