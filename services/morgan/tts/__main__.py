"""python -m morgan.tts: serve morgan-tts."""

from morgan.tts.app import main

main()
