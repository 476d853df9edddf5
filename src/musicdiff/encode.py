"""`python -m musicdiff.encode`: same as the `musicdiff-encode` console script."""

from musicdiff.cli.encode import main

if __name__ == "__main__":
    main()
