"""``python -m rankstack.cli``."""

from rankstack.cli import main

main()
