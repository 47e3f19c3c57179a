from hwkit.cli import main

main()
