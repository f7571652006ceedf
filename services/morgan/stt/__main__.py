"""python -m morgan.stt: serve morgan-stt."""

from morgan.stt.app import main

main()
