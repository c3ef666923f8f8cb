"""Run ``python -m reconciler`` as the ``tc`` command."""

from reconciler.cli import main

main()
