"""python -m morgan.vad: serve morgan-vad."""

from morgan.vad.app import main

main()
