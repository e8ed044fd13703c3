from appliancekit.cli import main

main()
