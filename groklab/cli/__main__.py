from groklab.cli import main

main()
