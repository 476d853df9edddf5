"""`python -m musicdiff.evaluate`: same as the `musicdiff-evaluate` console script."""

from musicdiff.cli.evaluate import main

if __name__ == "__main__":
    main()
