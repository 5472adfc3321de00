from clirkit.cli import main

main()
