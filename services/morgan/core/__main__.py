from morgan.core.main import main

main()
