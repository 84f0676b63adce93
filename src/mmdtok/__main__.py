from mmdtok.cli import main

main()
