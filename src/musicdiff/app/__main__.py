"""`python -m musicdiff.app`: same as the `musicdiff-app` console script."""

from musicdiff.cli.app import main

if __name__ == "__main__":
    main()
