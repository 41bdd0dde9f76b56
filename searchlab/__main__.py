"""`python -m searchlab [overrides]`."""

from searchlab.cli import main

main()
