"""python -m morgan.llm: serve morgan-llm."""

from morgan.llm.app import main

main()
