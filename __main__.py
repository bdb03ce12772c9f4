from avdet.cli import main

main()
