"""`python -m musicdiff.memorize`: same as the `musicdiff-memorization` console script."""

from musicdiff.cli.memorization import main

if __name__ == "__main__":
    main()
