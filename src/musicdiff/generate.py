"""`python -m musicdiff.generate`: same as the `musicdiff-generate` console script."""

from musicdiff.cli.generate import main

if __name__ == "__main__":
    main()
