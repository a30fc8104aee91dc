from faultlens.cli import main

main()
